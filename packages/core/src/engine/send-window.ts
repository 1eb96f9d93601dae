/**
 * Keeps up to `limit` channel sends pending at once, in the order they were started. A failure of
 * any of them is thrown by the next {@link SendWindow.start} or by {@link SendWindow.drain}; after
 * a failure nothing new starts.
 */
export class SendWindow {
  private readonly pending = new Set<Promise<void>>();
  private failure: { error: unknown } | undefined;

  /** @param limit - Sends pending at once; 1 or less runs each to completion before returning. */
  constructor(private readonly limit: number) {}

  /** Starts `send` once there is room; resolves when it has started (or finished, with `limit` 1). */
  async start(send: () => Promise<void>): Promise<void> {
    this.throwIfFailed();
    if (this.limit <= 1) {
      await send();
      return;
    }
    while (this.pending.size >= this.limit) await Promise.race(this.pending);
    this.throwIfFailed();
    const settled: Promise<void> = send().then(
      () => {
        this.pending.delete(settled);
      },
      (error: unknown) => {
        this.pending.delete(settled);
        this.failure ??= { error };
      },
    );
    this.pending.add(settled);
  }

  /** Waits for every pending send; throws the first failure. */
  async drain(): Promise<void> {
    while (this.pending.size > 0) await Promise.all(this.pending);
    this.throwIfFailed();
  }

  private throwIfFailed(): void {
    if (this.failure) throw this.failure.error;
  }
}
