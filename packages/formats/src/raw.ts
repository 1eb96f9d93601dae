import { type FileHandle, open, stat } from 'node:fs/promises';
import { type DiskWriter, type Extent, InputError, throwIfAborted, toStorageError } from '@replikit/core';
import { checkRange } from '@replikit/core/internal';
import { allocUninitialized, type ByteSource, isZero, openFileSource, ZERO_MIB } from './byte-source.js';
import { syncIf, writeAll } from './file-io.js';
import type { ImageInfo, ImageReader } from './image.js';

/** Granularity of the zero detection of raw images. */
export const RAW_GRANULE = 64 * 1024;

/**
 * A reader of a raw image. Node cannot ask the file system where the holes are (no SEEK_HOLE),
 * so `allocated()` detects them by content: a 64 KiB granule that reads as zeroes is a hole.
 * When the file occupies no blocks at all, the scan is skipped; with `scanHoles: false` the whole
 * disk is one extent (for callers that skip zeroes as they copy, to read the file once).
 */
export class RawReader implements ImageReader {
  readonly size: number;
  readonly blockSize = RAW_GRANULE;
  readonly info: ImageInfo;
  readonly parent = undefined;
  private closed = false;

  /** @internal use {@link openRaw}. */
  constructor(
    private readonly source: ByteSource,
    private readonly diskBlocks: number | undefined,
    private readonly scanHoles = true,
  ) {
    this.size = source.size;
    this.info = {
      format: 'raw',
      subformat: 'raw',
      path: source.name,
      size: this.size,
      blockSize: RAW_GRANULE,
      logicalSectorSize: 512,
      fileSize: source.size,
      extra: diskBlocks === undefined ? {} : { bytesOnDisk: diskBlocks * 512 },
    };
  }

  async *allocated(options: { signal?: AbortSignal } = {}): AsyncGenerator<Extent> {
    if (this.diskBlocks === 0) return;
    if (!this.scanHoles) {
      if (this.size > 0) yield { offset: 0, length: this.size };
      return;
    }
    const chunk = new Uint8Array(ZERO_MIB.length);
    let pending: Extent | undefined;
    for (let at = 0; at < this.size; at += chunk.length) {
      throwIfAborted(options.signal);
      const piece = chunk.subarray(0, Math.min(chunk.length, this.size - at));
      await this.source.readInto(piece, at, 'raw data');
      for (let g = 0; g < piece.length; g += RAW_GRANULE) {
        const granule = piece.subarray(g, Math.min(piece.length, g + RAW_GRANULE));
        if (isZero(granule)) continue;
        const offset = at + g;
        if (pending && pending.offset + pending.length === offset) pending.length += granule.length;
        else {
          if (pending) yield pending;
          pending = { offset, length: granule.length };
        }
      }
    }
    if (pending) yield pending;
  }

  async read(offset: number, length: number, options: { signal?: AbortSignal } = {}): Promise<Uint8Array> {
    checkRange(this.size, offset, length, `reading ${this.source.name}`);
    throwIfAborted(options.signal);
    const out = allocUninitialized(length);
    if (length > 0) await this.source.readInto(out, offset, 'raw data');
    return out;
  }

  async readInto(offset: number, target: Uint8Array, options: { signal?: AbortSignal } = {}): Promise<void> {
    checkRange(this.size, offset, target.length, `reading ${this.source.name}`);
    throwIfAborted(options.signal);
    if (target.length > 0) await this.source.readInto(target, offset, 'raw data');
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.source.close();
  }
}

/** Opens a raw image. */
export async function openRaw(path: string, options: { scanHoles?: boolean } = {}): Promise<RawReader> {
  const source = await openFileSource(path);
  let blocks: number | undefined;
  try {
    blocks = (await stat(path)).blocks;
  } catch {
    blocks = undefined;
  }
  return new RawReader(source, blocks, options.scanHoles ?? true);
}

/** A writer of a raw image. */
export interface RawWriter extends DiskWriter {
  /** The file being written. */
  readonly path: string;
}

/**
 * Creates (or replaces) a sparse raw image of `size` bytes. All-zero writes, and zero ranges that
 * were never written, stay holes: Node cannot punch holes, so zeroing data written earlier in
 * the same session writes zeroes.
 */
export async function createRaw(path: string, options: { size: number; sync?: boolean }): Promise<RawWriter> {
  if (!Number.isSafeInteger(options.size) || options.size < 0) {
    throw new InputError(`raw size ${options.size} is not a whole number of bytes`);
  }
  let handle: FileHandle;
  try {
    handle = await open(path, 'w+');
    await handle.truncate(options.size);
  } catch (error) {
    throw toStorageError(error, `creating ${path}`);
  }
  return new RawFileWriter(path, handle, options.size, options.sync ?? true);
}

class RawFileWriter implements RawWriter {
  /** Granules (RAW_GRANULE) that may hold data. */
  private readonly touched: Uint8Array;
  private closed = false;
  constructor(
    readonly path: string,
    private readonly handle: FileHandle,
    readonly size: number,
    private readonly sync: boolean,
  ) {
    this.touched = new Uint8Array(Math.ceil(size / RAW_GRANULE / 8));
  }
  private mark(offset: number, length: number): void {
    for (let g = Math.floor(offset / RAW_GRANULE); g * RAW_GRANULE < offset + length; g++) {
      this.touched[g >> 3]! |= 1 << (g & 7);
    }
  }
  private anyTouched(offset: number, length: number): boolean {
    for (let g = Math.floor(offset / RAW_GRANULE); g * RAW_GRANULE < offset + length; g++) {
      if (this.touched[g >> 3]! & (1 << (g & 7))) return true;
    }
    return false;
  }
  async write(offset: number, data: Uint8Array, options: { signal?: AbortSignal } = {}): Promise<void> {
    checkRange(this.size, offset, data.length, `writing ${this.path}`);
    throwIfAborted(options.signal);
    if (!this.anyTouched(offset, data.length) && isZero(data)) return;
    this.mark(offset, data.length);
    await writeAll(this.handle, data, offset, this.path);
  }
  async writeZeroes(offset: number, length: number, options: { signal?: AbortSignal } = {}): Promise<void> {
    checkRange(this.size, offset, length, `writing ${this.path}`);
    for (let at = offset; at < offset + length; at += ZERO_MIB.length) {
      throwIfAborted(options.signal);
      const n = Math.min(ZERO_MIB.length, offset + length - at);
      if (this.anyTouched(at, n)) await writeAll(this.handle, ZERO_MIB.subarray(0, n), at, this.path);
    }
  }
  async flush(): Promise<void> {
    await syncIf(this.sync, this.handle, this.path);
  }
  async close(): Promise<void> {
    if (this.closed) return;
    try {
      await this.flush();
    } finally {
      this.closed = true;
      await this.handle.close().catch(() => undefined);
    }
  }
}
