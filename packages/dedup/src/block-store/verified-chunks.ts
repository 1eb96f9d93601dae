/** Addresses a restore remembers having met (the last this many), to tell a chunk that repeats. */
const MET_ADDRESSES = 65536;

/**
 * Chunks a restore has already read and checked against their addresses, kept (as copies) within a
 * byte budget, oldest dropped first: a block that names one of them again is written from here,
 * without reading, decoding or hashing it again (a disk repeats blocks: runs of one pattern, the
 * same file in many places). Only a chunk met more than once is kept (most chunks of a disk are
 * named once: copying them all would cost more than it saves).
 */
export class VerifiedChunks {
  private readonly chunks = new Map<string, Uint8Array>();
  private bytes = 0;
  /** The last addresses met, and the ones met again (worth keeping once checked). */
  private readonly met = new Set<string>();
  private readonly wanted = new Set<string>();

  constructor(private readonly budget: number) {}

  /**
   * The checked bytes of the chunk at `address`, when kept; notes the address as met (twice: it
   * is kept the next time it is checked).
   */
  get(address: string): Uint8Array | undefined {
    const kept = this.chunks.get(address);
    if (kept) return kept;
    if (this.met.has(address)) this.wanted.add(address);
    else {
      if (this.met.size >= MET_ADDRESSES) this.met.delete(this.met.values().next().value as string);
      this.met.add(address);
    }
    return undefined;
  }

  /** Keeps a copy of `plain`, whose address was just checked to be `address`, if it was met again. */
  remember(address: string, plain: Uint8Array): void {
    if (!this.wanted.delete(address) || this.chunks.has(address) || plain.length > this.budget / 4) return;
    while (this.bytes + plain.length > this.budget) {
      const [oldest, kept] = this.chunks.entries().next().value as [string, Uint8Array];
      this.chunks.delete(oldest);
      this.bytes -= kept.length;
    }
    this.chunks.set(address, Uint8Array.prototype.slice.call(plain));
    this.bytes += plain.length;
  }
}
