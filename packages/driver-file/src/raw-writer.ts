import { constants } from 'node:fs';
import { type FileHandle, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { AbstractDiskWriter, type DiskWriter, type ReplikitError, toStorageError } from '@replikit/core';
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

/** A writer of one file: the core's writer base does the checks, the writes in flight and the failure. */
abstract class FileWriter extends AbstractDiskWriter {
  protected readonly path: string;
  private readonly lock: LockHandle;

  constructor(
    protected readonly fh: FileHandle,
    parts: WriterParts,
  ) {
    super({ size: parts.size, what: parts.what });
    this.path = parts.path;
    this.lock = parts.lock;
  }

  /** Runs before the file is closed. */
  protected async beforeClose(): Promise<void> {}

  protected override async _flush(): Promise<void> {
    await this.fh.sync();
  }

  protected override async _close(): Promise<void> {
    try {
      await this.beforeClose();
    } finally {
      try {
        await this.fh.close();
      } finally {
        await this.lock.release();
      }
    }
  }

  protected override _wrapError(error: unknown, what: string): ReplikitError {
    return toStorageError(error, `${what} (${this.path})`);
  }
}

class DirectWriter extends FileWriter {
  protected async _write(offset: number, data: Uint8Array): Promise<void> {
    await writeFully(this.fh, data, offset);
  }

  protected async _writeZeroes(offset: number, length: number): Promise<void> {
    await zeroRange(this.fh, offset, length, Buffer.allocUnsafeSlow(Math.min(length, IO_CHUNK)));
  }
}

class OverlayWriter extends FileWriter {
  private end: number;

  constructor(fh: FileHandle, parts: WriterParts, validLength: number) {
    super(fh, parts);
    this.end = validLength;
  }

  protected async _write(offset: number, data: Uint8Array): Promise<void> {
    const header = encodeRecordHeader(offset, data.length, data);
    const position = this.end; // reserved before any await: concurrent writes never overlap
    this.end += RECORD_HEADER_SIZE + data.length;
    await writevFully(this.fh, [header, data], position);
  }

  protected async _writeZeroes(offset: number, length: number): Promise<void> {
    const header = encodeRecordHeader(offset, length);
    const position = this.end;
    this.end += RECORD_HEADER_SIZE;
    await writevFully(this.fh, [header], position);
  }

  protected override async beforeClose(): Promise<void> {
    if (this.end === 0) await rm(this.path, { force: true }); // nothing written: leave no empty overlay
  }
}
