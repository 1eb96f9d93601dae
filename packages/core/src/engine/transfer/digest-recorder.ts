/**
 * The "record in the cache" step: the digest of every block of the source from the checkpoint
 * on goes to the new replication cache, a block at a time or (`entries`, a cache's
 * `appendEntries`) a segment at a time, back to back, all zero bytes for a zero block.
 */
export class DigestRecorder {
  private scratch = new Uint8Array(0);

  constructor(
    private readonly sink: {
      append(index: number, digest: Uint8Array | null): Promise<void>;
      appendEntries?(index: number, entries: Uint8Array): Promise<void>;
    },
    private readonly digestLength: number,
  ) {}

  /** Records one block's digest (`null`: zeros). */
  block(index: number, digest: Uint8Array | null): Promise<void> {
    return this.sink.append(index, digest);
  }

  /** Records the digests of a segment read from the source (`undefined` or zero: a zero block). */
  async segment(
    first: number,
    digests: ReadonlyArray<Uint8Array | undefined> | undefined,
    zero: readonly boolean[],
  ): Promise<void> {
    const count = zero.length;
    if (!this.sink.appendEntries) {
      for (let i = 0; i < count; i++) await this.sink.append(first + i, zero[i] ? null : digests![i]!);
      return;
    }
    const length = this.digestLength;
    if (this.scratch.length < count * length) this.scratch = new Uint8Array(count * length);
    const entries = this.scratch.subarray(0, count * length);
    entries.fill(0);
    for (let i = 0; i < count; i++) if (!zero[i]) entries.set(digests![i]!, i * length);
    await this.sink.appendEntries(first, entries);
  }
}
