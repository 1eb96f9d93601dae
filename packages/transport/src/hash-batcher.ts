import type { BlockHasher } from '@replikit/core';

/**
 * Gathers single-block hash requests into batches, so that a hasher on worker threads pays one
 * round trip per batch instead of one per block. A batch leaves when it holds `maxBlocks`
 * blocks, or at the end of the event-loop turn when fewer than `maxInFlight` batches are being
 * hashed; otherwise the blocks wait for the next batch to come back (the busier the hasher, the
 * larger the batches, and never more than one turn of delay when it is idle).
 */
/** Receives a block's digest, or the hasher's error. */
export type DigestCallback = (digest: Uint8Array | undefined, error?: unknown) => void;

export class HashBatcher {
  private blocks: Uint8Array[] = [];
  private callbacks: DigestCallback[] = [];
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
      this.submit(block, (digest, error) => (digest ? resolve(digest) : reject(error)));
    });
  }

  /**
   * Hashes `block` with the next batch and calls `done` with its digest (or the hasher's error):
   * the hot path's form of {@link HashBatcher.hash}, which allocates no promise per block.
   */
  submit(block: Uint8Array, done: DigestCallback): void {
    this.blocks.push(block);
    this.callbacks.push(done);
    if (this.blocks.length >= this.maxBlocks) this.flush();
    else if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.onTurnEnd);
    }
  }

  private readonly onTurnEnd = (): void => {
    this.scheduled = false;
    if (this.inFlight < this.maxInFlight) this.flush();
  };

  private flush(): void {
    const blocks = this.blocks;
    const callbacks = this.callbacks;
    if (blocks.length === 0) return;
    this.blocks = [];
    this.callbacks = [];
    this.inFlight++;
    this.hasher.hash(blocks).then(
      (digests) => {
        this.settled();
        for (let i = 0; i < callbacks.length; i++) {
          const digest = digests[i];
          callbacks[i]!(digest, digest ? undefined : new Error('the hasher returned too few digests'));
        }
      },
      (error: unknown) => {
        this.settled();
        for (const done of callbacks) done(undefined, error ?? new Error('the hasher failed'));
      },
    );
  }

  private settled(): void {
    this.inFlight--;
    // Blocks that waited for this batch leave now.
    if (!this.scheduled && this.inFlight < this.maxInFlight) this.flush();
  }
}
