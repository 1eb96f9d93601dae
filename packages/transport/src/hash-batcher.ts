import type { BlockHasher } from '@replikit/core';

/** Receives a block's digest, or the hasher's error. */
export type DigestCallback = (digest: Uint8Array | undefined, error?: unknown) => void;

/** Options of a {@link HashBatcher}. */
export interface HashBatcherOptions {
  /**
   * Blocks of one batch, at most.
   * @default 32
   */
  maxBlocks?: number;
  /**
   * Blocks a batch waits for before it leaves at the end of an event-loop turn, unless the
   * stream paused during that turn (see `activity`): then what is there leaves at once.
   * @default 1
   */
  minBlocks?: number;
  /**
   * A counter that moves while data arrives (bytes read from the connection): a turn in which it
   * did not move is a pause. @default the number of blocks submitted
   */
  activity?: () => number;
  /**
   * Batches being hashed at once before blocks wait for one to return.
   * @default Infinity
   */
  maxInFlight?: number;
}

/**
 * Gathers single-block hash requests into batches, so that a hasher on worker threads pays one
 * round trip per batch instead of one per block. A batch leaves when it holds `maxBlocks`
 * blocks, or at the end of an event-loop turn when fewer than `maxInFlight` batches are being
 * hashed and it holds `minBlocks` blocks or no block arrived during the turn; otherwise the
 * blocks wait for more (the busier the hasher or the faster blocks arrive, the larger the
 * batches; when blocks stop coming, a batch waits at most one more turn).
 */
export class HashBatcher {
  private blocks: Uint8Array[] = [];
  private callbacks: DigestCallback[] = [];
  private scheduled = false;
  private inFlight = 0;
  /** Blocks submitted so far. */
  private submitted = 0;
  /** The activity counter at the last end-of-turn check. */
  private lastActivity = -1;
  private readonly activity: () => number;
  private readonly maxBlocks: number;
  private readonly minBlocks: number;
  private readonly maxInFlight: number;

  /**
   * @param hasher - The hasher batches go to.
   * @param options - Batch sizes; a number is `maxBlocks` (with `maxInFlight` as third argument).
   */
  constructor(
    private readonly hasher: BlockHasher,
    options: HashBatcherOptions | number = {},
    maxInFlight?: number,
  ) {
    const resolved = typeof options === 'number' ? { maxBlocks: options, maxInFlight } : options;
    this.maxBlocks = Math.max(1, resolved.maxBlocks ?? 32);
    this.minBlocks = Math.min(this.maxBlocks, Math.max(1, resolved.minBlocks ?? 1));
    this.maxInFlight = Math.max(1, resolved.maxInFlight ?? Number.POSITIVE_INFINITY);
    this.activity = (typeof options === 'number' ? undefined : options.activity) ?? (() => this.submitted);
  }

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
    this.submitted++;
    if (this.blocks.length >= this.maxBlocks) this.flush();
    else this.schedule();
  }

  private schedule(): void {
    if (this.scheduled || this.blocks.length === 0) return;
    this.scheduled = true;
    setImmediate(this.onTurnEnd);
  }

  private readonly onTurnEnd = (): void => {
    this.scheduled = false;
    const activity = this.activity();
    const paused = activity === this.lastActivity;
    this.lastActivity = activity;
    if (this.inFlight >= this.maxInFlight) return; // the returning batch sends what waits
    if (paused || this.blocks.length >= this.minBlocks) this.flush();
    else this.schedule();
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
    // Blocks that waited for this batch leave at the end of this turn, or with more.
    this.schedule();
  }
}
