import type { BlockHasher } from '@replikit/core';

/**
 * Gathers single-block hash requests into batches: the blocks of the frames decoded in one turn
 * of the event loop (or `maxBlocks` of them) go to the hasher in one call. A hasher on worker
 * threads then pays one round trip per batch instead of one per block.
 */
export class HashBatcher {
  private blocks: Uint8Array[] = [];
  private waiters: Array<{ resolve(digest: Uint8Array): void; reject(error: unknown): void }> = [];
  private scheduled = false;

  constructor(
    private readonly hasher: BlockHasher,
    private readonly maxBlocks = 32,
  ) {}

  /** The digest of `block`, computed with the next batch. */
  hash(block: Uint8Array): Promise<Uint8Array> {
    return new Promise((resolve, reject) => {
      this.blocks.push(block);
      this.waiters.push({ resolve, reject });
      if (this.blocks.length >= this.maxBlocks) this.flush();
      else if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.scheduled = false;
    const blocks = this.blocks;
    const waiters = this.waiters;
    if (blocks.length === 0) return;
    this.blocks = [];
    this.waiters = [];
    this.hasher.hash(blocks).then(
      (digests) => {
        for (const [i, waiter] of waiters.entries()) waiter.resolve(digests[i]!);
      },
      (error: unknown) => {
        for (const waiter of waiters) waiter.reject(error);
      },
    );
  }
}
