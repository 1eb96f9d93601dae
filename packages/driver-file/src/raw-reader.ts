import type { FileHandle } from 'node:fs/promises';
import {
  AbstractDiskReader,
  type DiskReader,
  type Extent,
  type FileSpan,
  FormatError,
  type ReplikitError,
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
 * Opens a reader over a raw image of `size` bytes (the caller has checked the file's length). The
 * core's reader base checks ranges, state and signals; a read goes through one `FileHandle.read`
 * into one buffer and returns exactly `length` bytes in their own `ArrayBuffer` (safe to transfer to
 * a worker).
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

class RawDiskReader extends AbstractDiskReader {
  private readonly map: AllocationMap | undefined;

  constructor(
    private readonly fh: FileHandle,
    private readonly path: string,
    size: number,
    options: RawReaderOptions,
  ) {
    super({ size, blockSize: options.blockSize ?? options.map?.granule ?? 4096, what: options.what });
    this.map = options.map;
  }

  protected override async *_allocated(): AsyncIterable<Extent> {
    if (!this.map) yield* super._allocated();
    else yield* this.map.extents();
  }

  protected async _readInto(offset: number, target: Uint8Array): Promise<void> {
    const got = await readFully(this.fh, target, 0, target.length, offset);
    if (got < target.length) {
      throw new FormatError(
        `${this.what}: image ${this.path} ends at ${offset + got} bytes, shorter than the declared ${this.size}; it was truncated while open`,
        { details: { path: this.path, size: this.size } },
      );
    }
  }

  fileSpans(offset: number, length: number): FileSpan[] {
    this.guard(offset, length);
    return length === 0 ? [] : [{ fd: this.fh.fd, position: offset, length, path: this.path }];
  }

  protected override async _close(): Promise<void> {
    await this.fh.close();
  }

  protected override _wrapError(error: unknown): ReplikitError {
    return toStorageError(error, `reading ${this.what} (${this.path})`);
  }
}
