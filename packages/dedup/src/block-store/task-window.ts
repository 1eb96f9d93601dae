/**
 * Runs async tasks with at most `size` in flight. `add` waits for room; the first failure is
 * rethrown by the next `add` or by `drain`, and no task's rejection is ever left unhandled.
 */
export class Window {
  private readonly running = new Set<Promise<void>>();
  private failure: { error: unknown } | undefined;

  constructor(private readonly size: number) {}

  /** Starts `task` once fewer than `size` run; rejects with the first failure seen so far. */
  async add(task: () => Promise<void>): Promise<void> {
    while (this.running.size >= this.size) await Promise.race(this.running);
    this.rethrow();
    const running: Promise<void> = task()
      .catch((error: unknown) => {
        this.failure ??= { error };
      })
      .finally(() => this.running.delete(running));
    this.running.add(running);
  }

  /** Waits for every task; rejects with the first failure. */
  async drain(): Promise<void> {
    while (this.running.size > 0) await Promise.race(this.running);
    this.rethrow();
  }

  private rethrow(): void {
    if (this.failure) throw this.failure.error;
  }
}
