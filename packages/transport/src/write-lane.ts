/**
 * The writes of one replica disk on the target side. Operations are prepared (decoded, their
 * digest checked) and started strictly in the order received; up to `depth` of them run at once,
 * so the storage sees a queue instead of one write per round trip. Nothing is started after a
 * failure. {@link WriteLane.settled} waits for every operation queued before it, which is what
 * an ack needs.
 */
export class WriteLane {
  private chain: Promise<void> = Promise.resolve();
  private readonly running = new Set<Promise<void>>();
  private failure: { error: unknown } | undefined;
  private waiters: Array<() => void> = [];
  /** Bytes queued and not yet written. */
  queued = 0;

  /**
   * @param depth - Writes running at once.
   * @param maxQueued - Bytes queued before {@link WriteLane.push} waits for writes to finish.
   */
  constructor(
    private readonly depth: number,
    private readonly maxQueued: number,
  ) {}

  /**
   * Queues an operation of `bytes` bytes. `prepare` runs after the previous operation was
   * started and returns the write to start (it throws when the operation must not be written).
   * Returns `undefined` when the queue has room for more, or a promise that resolves once it has
   * room again (so that a reader that need not wait allocates nothing for it); throws, or
   * rejects, with the lane's failure, if any.
   */
  push(bytes: number, prepare: () => Promise<() => Promise<void>>): Promise<void> | undefined {
    this.check();
    this.queued += bytes;
    this.chain = this.chain.then(async () => {
      if (this.failure) return;
      try {
        const write = await prepare();
        while (this.running.size >= this.depth) await Promise.race(this.running);
        if (this.failure) return;
        const running: Promise<void> = write().then(
          () => {
            this.queued -= bytes;
          },
          (error: unknown) => this.fail(error),
        );
        this.running.add(running);
        void running.finally(() => {
          this.running.delete(running);
          this.notify();
        });
      } catch (error) {
        this.fail(error);
      }
    });
    return this.queued > this.maxQueued ? this.room() : undefined;
  }

  private async room(): Promise<void> {
    while (this.queued > this.maxQueued && !this.failure) {
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
    this.check();
  }

  /** Resolves when every operation queued so far is written; rejects with the lane's failure. */
  async settled(): Promise<void> {
    await this.chain;
    await Promise.all([...this.running]);
    this.check();
  }

  /** Waits for what runs, ignoring failures (a connection that ends). */
  async idle(): Promise<void> {
    await this.chain;
    await Promise.all([...this.running]);
  }

  private check(): void {
    if (this.failure) throw this.failure.error;
  }

  private fail(error: unknown): void {
    this.failure ??= { error };
    this.notify();
  }

  private notify(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const wake of waiters) wake();
  }
}
