import type { DiskWriter, OperationOptions } from '../contracts/index.js';
import { type ReplikitError, StateError, throwIfAborted } from '../errors.js';
import { checkRange } from '../util/range.js';
import { wrapDriverError } from './wrap-error.js';

/**
 * The base of a {@link DiskWriter}: it owns range checks, the closed state, `AbortSignal` checks,
 * concurrent writes to disjoint ranges (a `flush` waits for every write in flight), and the first
 * failure, which makes every later call fail the same way (a writer that lost a write must not
 * report a clean flush). A writer implements {@link AbstractDiskWriter._write},
 * {@link AbstractDiskWriter._writeZeroes} and, where it has storage to sync or release,
 * {@link AbstractDiskWriter._flush} and {@link AbstractDiskWriter._close}.
 *
 * @example
 * ```ts
 * class BufferWriter extends AbstractDiskWriter {
 *   constructor(private readonly data: Uint8Array) { super({ size: data.length, what: 'buffer' }); }
 *   protected async _write(offset: number, bytes: Uint8Array) { this.data.set(bytes, offset); }
 *   protected async _writeZeroes(offset: number, length: number) { this.data.fill(0, offset, offset + length); }
 * }
 * ```
 */
export abstract class AbstractDiskWriter implements DiskWriter {
  /** Virtual size in bytes. */
  readonly size: number;
  /** What is written, for messages (`disk 'd0' of replica 'web'`). */
  protected readonly what: string;
  private readonly inflight = new Set<Promise<void>>();
  private failure: ReplikitError | undefined;
  private closedState = false;

  /** @param parts - the disk's size, and what it is for messages. */
  constructor(parts: { size: number; what: string }) {
    this.size = parts.size;
    this.what = parts.what;
  }

  /** Writes `data` at `offset`; several writes to disjoint ranges may be in flight at once. */
  async write(offset: number, data: Uint8Array, options?: OperationOptions): Promise<void> {
    this.guard(offset, data?.length ?? Number.NaN, 'writing', options);
    if (data.length === 0) return;
    await this.track(() => this._write(offset, data));
  }

  /** Makes `[offset, offset + length)` read as zero. */
  async writeZeroes(offset: number, length: number, options?: OperationOptions): Promise<void> {
    this.guard(offset, length, 'writing zeroes to', options);
    if (length === 0) return;
    await this.track(() => this._writeZeroes(offset, length));
  }

  /** Waits for the writes in flight, then makes them durable. */
  async flush(options?: OperationOptions): Promise<void> {
    this.guard(0, 0, 'flushing', options);
    await this.sync();
  }

  /** Flushes (unless a write failed) and releases the writer, once; later calls do nothing. */
  async close(): Promise<void> {
    if (this.closedState) return;
    this.closedState = true;
    try {
      if (!this.failure) await this.sync();
    } finally {
      await this._close();
    }
  }

  /** Writes `data` at `offset` (range checked, non-empty, writer open and not failed). */
  protected abstract _write(offset: number, data: Uint8Array): Promise<void>;
  /** Makes the range read as zero (range checked, non-empty). */
  protected abstract _writeZeroes(offset: number, length: number): Promise<void>;
  /** Makes every write that resolved durable. @default nothing to do */
  protected async _flush(): Promise<void> {}
  /** Releases what the writer holds (files, locks); called once, after the last flush. */
  protected async _close(): Promise<void> {}

  /** Turns a foreign error into a `ReplikitError`. @default {@link wrapDriverError} */
  protected _wrapError(error: unknown, what: string): ReplikitError {
    return wrapDriverError(error, what);
  }

  private guard(offset: number, length: number, verb: string, options?: OperationOptions): void {
    checkRange(this.size, offset, length, `${verb} ${this.what}`);
    if (this.closedState) throw new StateError(`${this.what}: the writer is closed; open a new one`);
    if (this.failure) throw this.failure;
    throwIfAborted(options?.signal);
  }

  private async sync(): Promise<void> {
    await Promise.all(this.inflight);
    if (this.failure) throw this.failure;
    try {
      await this._flush();
    } catch (error) {
      this.failure = this._wrapError(error, `flushing ${this.what}`);
      throw this.failure;
    }
  }

  private async track(op: () => Promise<void>): Promise<void> {
    const running = op();
    const settled = running.then(
      () => undefined,
      () => undefined,
    );
    this.inflight.add(settled);
    try {
      await running;
    } catch (error) {
      const failure = this._wrapError(error, `writing ${this.what}`);
      this.failure ??= failure;
      throw failure;
    } finally {
      this.inflight.delete(settled);
    }
  }
}
