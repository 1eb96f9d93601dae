import type { FileHandle } from 'node:fs/promises';
import {
  checkRange,
  type DiskReader,
  type Extent,
  type FileSpan,
  FormatError,
  type OperationOptions,
  StateError,
  throwIfAborted,
  toStorageError,
} from '@replikit/core';
import type { AllocationMap } from './allocation-map.js';
import { readFully } from './block-io.js';
import { openDataFile, READ } from './data-file.js';

/** Options of {@link openRawReader}. */
export interface RawReaderOptions {
  /** The image's allocation map; without one, `allocated()` yields the whole disk. */
  map?: AllocationMap;
  /** Reported as the reader's `blockSize`. @default the map's granule, else 4096 */
  blockSize?: number;
  /** What the reader reads, for error messages (`disk 'd0' of snapshot …`). */
  what: string;
}

/**
 * Opens a reader over a raw image of `size` bytes (the caller has checked the file's length).
 * Reads are bounds-checked with `checkRange`, go through one `FileHandle.read` into one buffer and
 * return exactly `length` bytes in their own `ArrayBuffer` (safe to transfer to a worker).
 */
export async function openRawReader(path: string, size: number, options: RawReaderOptions): Promise<DiskReader> {
  let fh: FileHandle;
  try {
    fh = await openDataFile(path, READ, { what: options.what });
  } catch (error) {
    throw toStorageError(error, `opening ${options.what} (${path})`);
  }
  return new RawDiskReader(fh, path, size, options);
}

class RawDiskReader implements DiskReader {
  readonly size: number;
  readonly blockSize: number;
  private readonly fh: FileHandle;
  private readonly path: string;
  private readonly map: AllocationMap | undefined;
  private readonly what: string;
  private closed = false;

  constructor(fh: FileHandle, path: string, size: number, options: RawReaderOptions) {
    this.fh = fh;
    this.path = path;
    this.size = size;
    this.map = options.map;
    this.what = options.what;
    this.blockSize = options.blockSize ?? options.map?.granule ?? 4096;
  }

  async *allocated(options?: OperationOptions): AsyncIterable<Extent> {
    this.assertOpen();
    if (!this.map) {
      if (this.size > 0) yield { offset: 0, length: this.size };
      return;
    }
    for (const extent of this.map.extents()) {
      throwIfAborted(options?.signal);
      yield extent;
    }
  }

  async read(offset: number, length: number, options?: OperationOptions): Promise<Uint8Array> {
    checkRange(this.size, offset, length, `reading ${this.what}`);
    const buffer = Buffer.allocUnsafeSlow(length);
    await this.readInto(offset, buffer, options);
    return buffer;
  }

  async readInto(offset: number, target: Uint8Array, options?: OperationOptions): Promise<void> {
    const length = target.length;
    checkRange(this.size, offset, length, `reading ${this.what}`);
    this.assertOpen();
    throwIfAborted(options?.signal);
    const buffer = target;
    let got: number;
    try {
      got = await readFully(this.fh, buffer, 0, length, offset);
    } catch (error) {
      throw toStorageError(error, `reading ${this.what} (${this.path})`);
    }
    if (got < length) {
      throw new FormatError(
        `${this.what}: image ${this.path} ends at ${offset + got} bytes, shorter than the declared ${this.size}; it was truncated while open`,
        { details: { path: this.path, size: this.size } },
      );
    }
  }

  fileSpans(offset: number, length: number): FileSpan[] {
    checkRange(this.size, offset, length, `reading ${this.what}`);
    this.assertOpen();
    return length === 0 ? [] : [{ fd: this.fh.fd, position: offset, length, path: this.path }];
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh.close();
  }

  private assertOpen(): void {
    if (this.closed) throw new StateError(`${this.what}: the reader is closed; open a new one`);
  }
}
