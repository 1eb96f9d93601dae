import type { FileHandle } from 'node:fs/promises';

/**
 * Starts a write-back of a file (`datasync` on the thread pool, not awaited) every `every` bytes
 * written (one at a time), so the final `sync` of a large restore finds little left to write. A failed
 * write-back is reported by {@link BackgroundFlush.settle}.
 */
export class BackgroundFlush {
  private sinceLast = 0;
  private running: Promise<void> | undefined;
  private failure: { error: unknown } | undefined;

  constructor(
    private readonly handle: FileHandle,
    private readonly every: number,
  ) {}

  /** Counts bytes written; starts a write-back when `every` have gathered and none is running. */
  wrote(bytes: number): void {
    this.sinceLast += bytes;
    if (this.sinceLast < this.every || this.running) return;
    this.sinceLast = 0;
    this.running = this.handle
      .datasync()
      .catch((error: unknown) => {
        this.failure ??= { error };
      })
      .finally(() => {
        this.running = undefined;
      });
  }

  /** Waits for the write-backs started; rejects with the first failure. */
  async settle(): Promise<void> {
    await this.running;
    if (this.failure) throw this.failure.error;
  }
}
