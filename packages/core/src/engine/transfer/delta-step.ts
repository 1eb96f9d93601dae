import type { DiskReader } from '../../contracts/disk.js';
import { type BlockHasher, sameDigest } from '../block-hasher.js';
import type { TransferStats } from '../run-record.js';

/**
 * The delta step: finds the base of a changed block's difference — its previous content (the
 * previous snapshot of the source disk), when that has the replica's digest — for a channel that
 * takes deltas (it encodes the difference, or sends the block whole when that does not pay). The
 * base is opened when the first changed block needs it (a scan that finds nothing changed never
 * opens it), or its blocks come prefetched with the segment.
 */
export class DeltaStep {
  private opened: Promise<DiskReader | undefined> | undefined;

  constructor(
    private readonly base: DiskReader | (() => Promise<DiskReader | undefined>),
    private readonly hasher: BlockHasher,
    private readonly blockSize: number,
    private readonly stats: TransferStats,
    private readonly signal: AbortSignal | undefined,
  ) {}

  /**
   * The replica's current block for a delta from it (`null`: all zeros), given its digest
   * `theirs`, or undefined when the source cannot know it (the previous snapshot's block does not
   * have the replica's digest, or there is no previous snapshot).
   */
  async baseOf(
    index: number,
    block: Uint8Array,
    theirs: Uint8Array | null,
    prefetched?: { block: Uint8Array; digest: Uint8Array | null },
  ): Promise<Uint8Array | null | undefined> {
    if (theirs === null) return null; // the replica's block is all zeros
    let base = prefetched?.block;
    let digest = prefetched?.digest;
    if (!base) {
      const reader = await this.reader();
      if (!reader) return undefined;
      base = await reader.read(index * this.blockSize, block.length, { signal: this.signal });
      this.stats.bytesRead += base.length;
      [digest] = await this.hasher.hash([base]);
    }
    if (!digest || !sameDigest(digest, theirs)) return undefined; // the replica does not hold it
    return base;
  }

  private reader(): Promise<DiskReader | undefined> {
    const base = this.base;
    this.opened ??= typeof base === 'function' ? base() : Promise.resolve(base);
    return this.opened;
  }
}
