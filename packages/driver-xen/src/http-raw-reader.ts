import type { IncomingMessage } from 'node:http';
import { AbstractDiskReader, type Extent, IoError, type OperationOptions } from '@replikit/core';
import { vhdAllocation } from './vhd-allocation.js';
import type { XenConnection } from './xapi/xen-connection.js';

/** Exports that may drop during one read before it fails. */
const MAX_DROPS = 3;

/**
 * Reads a VDI through `GET /export_raw_vdi?format=raw`: a stream from byte 0. Forward reads skip
 * ahead on the open stream; a read behind it opens a new one, and so does an export that
 * drops (up to three times per read), skipping to where it stopped. The fallback when NBD is not offered.
 */
export class HttpRawReader extends AbstractDiskReader {
  private stream: IncomingMessage | undefined;
  private iterator: AsyncIterator<Buffer> | undefined;
  private position = 0;
  private leftover: Buffer = Buffer.alloc(0);
  /** The read in progress (see {@link HttpRawReader._readInto}). */
  private queue: Promise<void> = Promise.resolve();
  /** Streams opened (tests: a forward-only read opens one). */
  opened = 0;

  constructor(
    private readonly connection: XenConnection,
    private readonly vdiRef: string,
    size: number,
    what: string,
  ) {
    super({ size, blockSize: 65_536, what });
  }

  /**
   * Reads one at a time, in the order they were asked: they share one stream and its position,
   * and reads the engine has in flight at once would otherwise take each other's bytes.
   */
  protected _readInto(offset: number, target: Uint8Array, options?: OperationOptions): Promise<void> {
    const read = this.queue.then(() => this.readInOrder(offset, target, options));
    this.queue = read.catch(() => undefined);
    return read;
  }

  private async readInOrder(offset: number, target: Uint8Array, options?: OperationOptions): Promise<void> {
    const signal = options?.signal;
    if (!this.iterator || offset < this.position) await this.reopen(signal);
    let filled = 0;
    let drops = 0;
    while (filled < target.length) {
      if (this.leftover.length === 0) {
        let next: IteratorResult<Buffer>;
        try {
          next = await this.iterator!.next();
          if (next.done)
            throw new IoError(`${this.what}: the raw export ended at byte ${this.position} of ${this.size}`);
        } catch (error) {
          // A dropped export: start a new one and skip back to where this one stopped.
          if (signal?.aborted || ++drops > MAX_DROPS) throw error;
          const resumeAt = offset + filled;
          await this.reopen(signal);
          offset = resumeAt;
          target = target.subarray(filled);
          filled = 0;
          continue;
        }
        this.leftover = next.value;
      }
      const skip = Math.min(this.leftover.length, Math.max(0, offset - this.position));
      if (skip > 0) {
        this.leftover = this.leftover.subarray(skip);
        this.position += skip;
        continue;
      }
      const take = Math.min(this.leftover.length, target.length - filled);
      target.set(this.leftover.subarray(0, take), filled);
      this.leftover = this.leftover.subarray(take);
      this.position += take;
      filled += take;
    }
  }

  protected override async *_allocated(options?: OperationOptions): AsyncIterable<Extent> {
    const extents = await vhdAllocation(this.connection, this.vdiRef, this.size, options?.signal);
    if (extents) yield* extents;
    else yield { offset: 0, length: this.size };
  }

  protected override async _close(): Promise<void> {
    this.stream?.destroy();
    this.stream = undefined;
    this.iterator = undefined;
  }

  private async reopen(signal?: AbortSignal): Promise<void> {
    this.stream?.destroy();
    this.stream = await this.connection.get('/export_raw_vdi', { vdi: this.vdiRef, format: 'raw' }, signal);
    this.iterator = this.stream[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
    this.position = 0;
    this.leftover = Buffer.alloc(0);
    this.opened++;
  }
}
