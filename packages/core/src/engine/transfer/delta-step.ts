import type { DiskReader } from '../../contracts/disk.js';
import { encodeBlockDelta } from '../../util/block-delta.js';
import { type BlockHasher, sameDigest } from '../block-hasher.js';
import type { TransferStats } from '../run-record.js';

/**
 * The delta step: a changed block whose previous content (the delta base: the previous snapshot
 * of the source disk) has the replica's digest travels as a compressed difference from it, when
 * that is at most half the block. The base is opened when the first changed block needs it (a
 * scan that finds nothing changed never opens it), or its blocks come prefetched with the segment.
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

  /** The block as a delta from the replica's block (`theirs`), or undefined when that does not pay or is unsafe. */
  async make(
    index: number,
    block: Uint8Array,
    theirs: Uint8Array | null,
    prefetched?: { block: Uint8Array; digest: Uint8Array | null },
  ): Promise<Uint8Array | undefined> {
    const limit = block.length >> 1;
    if (theirs === null) return encodeBlockDelta(block, undefined, limit); // the replica's block is all zeros
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
    return encodeBlockDelta(block, base, limit);
  }

  private reader(): Promise<DiskReader | undefined> {
    const base = this.base;
    this.opened ??= typeof base === 'function' ? base() : Promise.resolve(base);
    return this.opened;
  }
}
