import { availableParallelism } from 'node:os';
import type { BlockHasher } from '@replikit/core';
import { createHashingPool } from '../hashing-pool.js';
import { keyedAddress, type StoreKeys } from './chunk-crypto.js';

/**
 * Computes the content addresses of many chunks for a restore: sha256 of each plain block on the
 * hashing pool's worker threads (one batch is hashed while the restoring thread reads and decodes
 * the next), or HMAC-SHA-256 under the address key of an encrypted store, on the calling thread.
 * Same addresses as the store's synchronous `addressOf`. Close it when done.
 */
export class ChunkAddresser {
  private constructor(
    private readonly keys: StoreKeys | null,
    private readonly pool: BlockHasher | undefined,
  ) {}

  /**
   * An addresser for a store with `keys` (or none). A plain store gets a sha256 pool of all cores
   * but the caller's (at least one thread).
   */
  static async open(keys: StoreKeys | null): Promise<ChunkAddresser> {
    if (keys) return new ChunkAddresser(keys, undefined);
    const threads = Math.max(1, availableParallelism() - 1);
    // Threads started now: a restore's loop may not yield to the event loop for a long time, and
    // until it does the pool would not notice them up and would hash every batch on this thread.
    return new ChunkAddresser(null, await createHashingPool({ algorithm: 'sha256', threads, startThreads: true }));
  }

  /**
   * A buffer whose blocks the pool's threads hash where they lie (no copy), when the store is
   * plain (see `BlockHasher.allocate`); `undefined` for an encrypted one.
   */
  allocate(bytes: number): Uint8Array | undefined {
    return this.pool?.allocate?.(bytes);
  }

  /** The 32-byte address of each block, in order. */
  async addressesOf(blocks: readonly Uint8Array[]): Promise<Uint8Array[]> {
    if (this.pool) return this.pool.hash(blocks);
    const keys = this.keys!;
    return blocks.map((block) => keyedAddress(keys, block));
  }

  /** Stops the pool's threads. */
  async close(): Promise<void> {
    await this.pool?.close?.();
  }
}
