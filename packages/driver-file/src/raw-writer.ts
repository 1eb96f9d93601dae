import { constants } from 'node:fs';
import { type FileHandle, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import {
  checkRange,
  type DiskWriter,
  type OperationOptions,
  type ReplikitError,
  StateError,
  throwIfAborted,
  toStorageError,
} from '@replikit/core';
import { fsyncDir } from './atomic-write.js';
import { IO_CHUNK, writeFully, writevFully, zeroRange } from './block-io.js';
import { openDataFile, READ_WRITE } from './data-file.js';
import type { LockHandle } from './locks.js';
import { encodeRecordHeader, RECORD_HEADER_SIZE } from './overlay-log.js';

/** What every writer needs. */
interface WriterParts {
  /** The file written: the image (direct mode) or the overlay. */
  path: string;
  /** Virtual size of the disk. */
  size: number;
  /** The disk's writer lock, released by `close`. */
  lock: LockHandle;
  /** What is written, for error messages (`disk 'd0' of replica 'web'`). */
  what: string;
}

/**
 * Opens a writer that writes straight into the raw image `path` ("direct mode": a replica without
 * restore points yet, whose content is not a complete version anyway). `writeZeroes` reads each
 * 1 MiB chunk first and writes only chunks that are not already zero, so a freshly created (sparse)
 * region stays a hole and costs no writes. `flush` fsyncs the image.
 */
export async function openDirectWriter(parts: WriterParts): Promise<DiskWriter> {
  let fh: FileHandle;
  try {
    fh = await openDataFile(parts.path, READ_WRITE, { what: parts.what });
  } catch (error) {
    throw toStorageError(error, `opening ${parts.what} for writing`);
  }
  return new DirectWriter(fh, parts);
}

/**
 * Opens a writer that appends every write to the overlay `path` (`<image>.overlay`), an
 * append-only redo log of CRC-checked records, leaving the image (the last restore point)
 * untouched until the next commit. `validLength` is where the overlay's valid records end (the
 * caller has scanned it and cut a torn tail); new records go after it. `flush` fsyncs the overlay.
 */
export async function openOverlayWriter(parts: WriterParts & { validLength: number }): Promise<DiskWriter> {
  let fh: FileHandle;
  try {
    fh = await openDataFile(parts.path, constants.O_RDWR | constants.O_CREAT, { what: `the overlay of ${parts.what}` });
    if (parts.validLength === 0) await fsyncDir(dirname(parts.path)); // the overlay may be new
  } catch (error) {
    throw toStorageError(error, `opening the overlay of ${parts.what}`);
  }
  return new OverlayWriter(fh, parts, parts.validLength);
}

abstract class BaseWriter implements DiskWriter {
  readonly size: number;
  protected readonly fh: FileHandle;
  protected readonly path: string;
  protected readonly what: string;
  private readonly lock: LockHandle;
  private readonly inflight = new Set<Promise<void>>();
  private failure: ReplikitError | undefined;
  private closed = false;

  constructor(fh: FileHandle, parts: WriterParts) {
    this.fh = fh;
    this.path = parts.path;
    this.size = parts.size;
    this.what = parts.what;
    this.lock = parts.lock;
  }

  async write(offset: number, data: Uint8Array, options?: OperationOptions): Promise<void> {
    checkRange(this.size, offset, data?.length ?? Number.NaN, `writing ${this.what}`);
    this.assertUsable();
    throwIfAborted(options?.signal);
    if (data.length === 0) return;
    await this.track(() => this.writeData(offset, data));
  }

  async writeZeroes(offset: number, length: number, options?: OperationOptions): Promise<void> {
    checkRange(this.size, offset, length, `writing zeroes to ${this.what}`);
    this.assertUsable();
    throwIfAborted(options?.signal);
    if (length === 0) return;
    await this.track(() => this.writeZero(offset, length));
  }

  async flush(options?: OperationOptions): Promise<void> {
    this.assertUsable();
    throwIfAborted(options?.signal);
    await this.sync();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      if (!this.failure) await this.sync();
      await this.beforeClose();
    } finally {
      try {
        await this.fh.close();
      } finally {
        await this.lock.release();
      }
    }
  }

  /** Writes `data` at `offset` (range checked). */
  protected abstract writeData(offset: number, data: Uint8Array): Promise<void>;
  /** Makes the range read as zero (range checked). */
  protected abstract writeZero(offset: number, length: number): Promise<void>;
  /** Runs before the file is closed. */
  protected async beforeClose(): Promise<void> {}

  private async sync(): Promise<void> {
    await Promise.all(this.inflight);
    if (this.failure) throw this.failure;
    try {
      await this.fh.sync();
    } catch (error) {
      this.failure = toStorageError(error, `flushing ${this.what} (${this.path})`);
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
      const failure = toStorageError(error, `writing ${this.what} (${this.path})`);
      this.failure ??= failure;
      throw failure;
    } finally {
      this.inflight.delete(settled);
    }
  }

  private assertUsable(): void {
    if (this.closed) throw new StateError(`${this.what}: the writer is closed; open a new one`);
    if (this.failure) throw this.failure;
  }
}

class DirectWriter extends BaseWriter {
  protected async writeData(offset: number, data: Uint8Array): Promise<void> {
    await writeFully(this.fh, data, offset);
  }

  protected async writeZero(offset: number, length: number): Promise<void> {
    await zeroRange(this.fh, offset, length, Buffer.allocUnsafeSlow(Math.min(length, IO_CHUNK)));
  }
}

class OverlayWriter extends BaseWriter {
  private end: number;

  constructor(fh: FileHandle, parts: WriterParts, validLength: number) {
    super(fh, parts);
    this.end = validLength;
  }

  protected async writeData(offset: number, data: Uint8Array): Promise<void> {
    const header = encodeRecordHeader(offset, data.length, data);
    const position = this.end; // reserved before any await: concurrent writes never overlap
    this.end += RECORD_HEADER_SIZE + data.length;
    await writevFully(this.fh, [header, data], position);
  }

  protected async writeZero(offset: number, length: number): Promise<void> {
    const header = encodeRecordHeader(offset, length);
    const position = this.end;
    this.end += RECORD_HEADER_SIZE;
    await writevFully(this.fh, [header], position);
  }

  protected override async beforeClose(): Promise<void> {
    if (this.end === 0) await rm(this.path, { force: true }); // nothing written: leave no empty overlay
  }
}
