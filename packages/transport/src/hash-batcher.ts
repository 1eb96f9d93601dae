import type { BlockHasher } from '@replikit/core';

/**
 * Gathers single-block hash requests into batches, so that a hasher on worker threads pays one
 * round trip per batch instead of one per block. A batch leaves when it holds `maxBlocks`
 * blocks, or at the end of the event-loop turn when fewer than `maxInFlight` batches are being
 * hashed; otherwise the blocks wait for the next batch to come back (the busier the hasher, the
 * larger the batches, and never more than one turn of delay when it is idle).
 */
export class HashBatcher {
  private blocks: Uint8Array[] = [];
  private waiters: Array<{ resolve(digest: Uint8Array): void; reject(error: unknown): void }> = [];
  private scheduled = false;
  private inFlight = 0;

  /**
   * @param hasher - The hasher batches go to.
   * @param maxBlocks - Blocks of one batch, at most.
   * @param maxInFlight - Batches being hashed at once before blocks wait for one to return.
   */
  constructor(
    private readonly hasher: BlockHasher,
    private readonly maxBlocks = 32,
    private readonly maxInFlight = Number.POSITIVE_INFINITY,
  ) {}

  /** The digest of `block`, computed with the next batch. */
  hash(block: Uint8Array): Promise<Uint8Array> {
    return new Promise((resolve, reject) => {
      this.blocks.push(block);
      this.waiters.push({ resolve, reject });
      if (this.blocks.length >= this.maxBlocks) this.flush();
      else if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => {
          this.scheduled = false;
          if (this.inFlight < this.maxInFlight) this.flush();
        });
      }
    });
  }

  private flush(): void {
    const blocks = this.blocks;
    const waiters = this.waiters;
    if (blocks.length === 0) return;
    this.blocks = [];
    this.waiters = [];
    this.inFlight++;
    this.hasher.hash(blocks).then(
      (digests) => {
        this.settled();
        for (const [i, waiter] of waiters.entries()) waiter.resolve(digests[i]!);
      },
      (error: unknown) => {
        this.settled();
        for (const waiter of waiters) waiter.reject(error);
      },
    );
  }

  private settled(): void {
    this.inFlight--;
    // Blocks that waited for this batch leave now.
    if (!this.scheduled && this.inFlight < this.maxInFlight) this.flush();
  }
}
