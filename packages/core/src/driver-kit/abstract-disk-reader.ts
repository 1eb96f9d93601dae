import type { DiskReader, Extent, OperationOptions } from '../contracts/index.js';
import { type ReplikitError, StateError, throwIfAborted } from '../errors.js';
import { checkRange } from '../util/range.js';
import { wrapDriverError } from './wrap-error.js';

/**
 * The base of a {@link DiskReader}: it owns the closed state, range checks, `AbortSignal` checks
 * and error wrapping, so a reader implements {@link AbstractDiskReader._readInto} (and, when it
 * knows its holes, {@link AbstractDiskReader._allocated}) and nothing else. Its hooks receive
 * checked, in-range arguments on an open reader.
 *
 * @example
 * ```ts
 * class BufferReader extends AbstractDiskReader {
 *   constructor(private readonly data: Uint8Array) { super({ size: data.length, blockSize: 4096, what: 'buffer' }); }
 *   protected async _readInto(offset: number, target: Uint8Array): Promise<void> {
 *     target.set(this.data.subarray(offset, offset + target.length));
 *   }
 * }
 * ```
 */
export abstract class AbstractDiskReader implements DiskReader {
  /** Virtual size in bytes. */
  readonly size: number;
  /** The natural granularity of the storage, a power of two. */
  readonly blockSize: number;
  /** What is read, for messages (`disk 'd0' of snapshot 's1'`). */
  protected readonly what: string;
  private closedState = false;

  /** @param parts - the disk's size and block size, and what it is for messages. */
  constructor(parts: { size: number; blockSize: number; what: string }) {
    this.size = parts.size;
    this.blockSize = parts.blockSize;
    this.what = parts.what;
  }

  /** True once {@link close} was called. */
  protected get closed(): boolean {
    return this.closedState;
  }

  /** Yields the extents that may hold data (see {@link DiskReader.allocated}); checks the signal between them. */
  async *allocated(options?: OperationOptions): AsyncIterable<Extent> {
    this.guard(0, 0, options);
    for await (const extent of this._allocated(options)) {
      throwIfAborted(options?.signal);
      yield extent;
    }
  }

  /** Reads `length` bytes at `offset` into a fresh buffer of its own. */
  async read(offset: number, length: number, options?: OperationOptions): Promise<Uint8Array> {
    this.guard(offset, length, options);
    const target = Buffer.allocUnsafeSlow(length);
    await this.call(() => this._readInto(offset, target, options), options);
    return target;
  }

  /** Reads `target.length` bytes at `offset` into `target`. */
  async readInto(offset: number, target: Uint8Array, options?: OperationOptions): Promise<void> {
    this.guard(offset, target?.length ?? Number.NaN, options);
    await this.call(() => this._readInto(offset, target, options), options);
  }

  /** Closes the reader once; later calls do nothing. */
  async close(): Promise<void> {
    if (this.closedState) return;
    this.closedState = true;
    await this._close();
  }

  /**
   * Checks, in this order, that the range lies inside the disk (`E_INPUT`), that the reader is
   * open (`E_STATE`) and that `options.signal` is not aborted (`E_ABORTED`). For a subclass's own
   * extra methods (`fileSpans`).
   */
  protected guard(offset: number, length: number, options?: OperationOptions): void {
    checkRange(this.size, offset, length, `reading ${this.what}`);
    if (this.closedState) throw new StateError(`${this.what}: the reader is closed; open a new one`);
    throwIfAborted(options?.signal);
  }

  /** Reads `target.length` bytes at `offset` (range checked, reader open). */
  protected abstract _readInto(offset: number, target: Uint8Array, options?: OperationOptions): Promise<void>;

  /** The extents that may hold data. @default one extent over the whole disk */
  protected async *_allocated(_options?: OperationOptions): AsyncIterable<Extent> {
    if (this.size > 0) yield { offset: 0, length: this.size };
  }

  /** Releases what the reader holds; called once. */
  protected async _close(): Promise<void> {}

  /** Turns a foreign error into a `ReplikitError`. @default {@link wrapDriverError} */
  protected _wrapError(error: unknown, options?: OperationOptions): ReplikitError {
    return wrapDriverError(error, `reading ${this.what}`, options?.signal);
  }

  private async call(hook: () => Promise<void>, options?: OperationOptions): Promise<void> {
    try {
      await hook();
    } catch (error) {
      throw this._wrapError(error, options);
    }
  }
}
