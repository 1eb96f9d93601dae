import type { BlockHasher } from './block-hasher.js';

/**
 * Keeps read buffers between the disks and runs of an engine, per hasher (buffers from a pool's
 * `allocate` belong to that pool). Fresh memory costs a page fault per 4 KiB page on first touch,
 * which on some virtual machines adds up to milliseconds per MiB: a run that reuses the last run's
 * buffers skips that. A buffer is on the shelf only while no transfer uses it, and the shelf holds
 * at most what the busiest moment needed.
 */
export class BufferShelf {
  private readonly spare = new WeakMap<BlockHasher, Map<number, Uint8Array[]>>();

  /** `count` buffers of `bytes` bytes: from the shelf first, then new (from the hasher when it allocates). */
  take(hasher: BlockHasher, count: number, bytes: number): Uint8Array[] {
    const kept = this.spare.get(hasher)?.get(bytes) ?? [];
    const taken = kept.splice(Math.max(0, kept.length - count), count);
    while (taken.length < count) taken.push(hasher.allocate?.(bytes) ?? new Uint8Array(bytes));
    return taken;
  }

  /** Puts buffers back, once nothing reads into or sends from them any more. */
  give(hasher: BlockHasher, buffers: readonly Uint8Array[]): void {
    let bySize = this.spare.get(hasher);
    if (!bySize) {
      bySize = new Map();
      this.spare.set(hasher, bySize);
    }
    for (const buffer of buffers) {
      let kept = bySize.get(buffer.length);
      if (!kept) {
        kept = [];
        bySize.set(buffer.length, kept);
      }
      kept.push(buffer);
    }
  }
}
