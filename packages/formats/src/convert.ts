import { type DiskReader, type DiskWriter, type Extent, InputError, throwIfAborted } from '@replikit/core';
import { isZero } from './byte-source.js';
import type { ImageFormat } from './image.js';
import { openDisk } from './open-disk.js';
import { createRaw } from './raw.js';
import { createVhd } from './vhd/vhd-writer.js';
import { createVhdx } from './vhdx/vhdx-writer.js';

/** Progress of a copy, in absolute counters. */
export interface CopyProgress {
  /** Bytes of the source's allocated extents copied so far. */
  done: number;
  /** Bytes of the source's allocated extents. */
  total: number;
}

/** Options of {@link copyDisk}. */
export interface CopyDiskOptions {
  /**
   * Bytes per read and write.
   * @default 1 MiB (rounded to divide the target's block size)
   */
  chunkSize?: number;
  /**
   * The target is fresh (reads as zeroes): all-zero chunks are skipped instead of written.
   * @default true
   */
  targetIsEmpty?: boolean;
  /** Called after each chunk. */
  onProgress?: (progress: CopyProgress) => void;
  signal?: AbortSignal;
}

/**
 * Copies the virtual content of `reader` into `writer` (same size), chunk by chunk over the
 * allocated extents only, reading the next chunk while the current one is written. The writer
 * is flushed, not closed.
 */
export async function copyDisk(reader: DiskReader, writer: DiskWriter, options: CopyDiskOptions = {}): Promise<void> {
  if (writer.size < reader.size) {
    throw new InputError(`the target (${writer.size} bytes) is smaller than the source (${reader.size} bytes)`);
  }
  const chunk = options.chunkSize ?? 1024 * 1024;
  const skipZero = options.targetIsEmpty ?? true;
  const extents: Extent[] = [];
  for await (const e of reader.allocated(options.signal ? { signal: options.signal } : {})) extents.push(e);
  const total = extents.reduce((n, e) => n + e.length, 0);
  const pieces = function* () {
    for (const e of extents) {
      // align chunks to multiples of `chunk` so that writes fill whole target blocks
      let at = e.offset;
      while (at < e.offset + e.length) {
        const next = Math.min(e.offset + e.length, (Math.floor(at / chunk) + 1) * chunk);
        yield { offset: at, length: next - at };
        at = next;
      }
    }
  };
  let done = 0;
  let pending: Promise<void> = Promise.resolve();
  const it = pieces();
  let current = it.next();
  let data = current.done ? undefined : reader.read(current.value.offset, current.value.length);
  while (!current.done && data) {
    throwIfAborted(options.signal);
    const piece = current.value;
    const bytes = await data;
    current = it.next();
    data = current.done ? undefined : reader.read(current.value.offset, current.value.length);
    await pending;
    pending = skipZero && isZero(bytes) ? Promise.resolve() : writer.write(piece.offset, bytes);
    done += piece.length;
    options.onProgress?.({ done, total });
  }
  await pending;
  await writer.flush();
}

/** Options of {@link convertDisk}. */
export interface ConvertOptions extends CopyDiskOptions {
  /** The output format. */
  to: ImageFormat;
  /** Block size of a VHD or VHDX output. @default 2 MiB for VHD, 32 MiB for VHDX */
  blockSize?: number;
  /** Subformat of a VHD or VHDX output. @default 'dynamic' */
  subformat?: 'fixed' | 'dynamic';
  /** Logical sector size of a VHDX output. @default the source's (512 for raw and VHD) */
  logicalSectorSize?: 512 | 4096;
}

/**
 * Converts the image at `input` (any format, a differencing chain flattened) into a new image at
 * `output`.
 *
 * @example
 * ```ts
 * await convertDisk('/images/xen.vhd', '/images/hyperv.vhdx', { to: 'vhdx', blockSize: 32 * 2 ** 20 });
 * ```
 */
export async function convertDisk(input: string, output: string, options: ConvertOptions): Promise<void> {
  const reader = await openDisk(input);
  try {
    const type = options.subformat ?? 'dynamic';
    const writer =
      options.to === 'raw'
        ? await createRaw(output, { size: reader.size })
        : options.to === 'vhd'
          ? await createVhd(output, {
              size: reader.size,
              type,
              ...(options.blockSize ? { blockSize: options.blockSize } : {}),
            })
          : await createVhdx(output, {
              size: reader.size,
              type,
              ...(options.blockSize ? { blockSize: options.blockSize } : {}),
              logicalSectorSize: options.logicalSectorSize ?? (reader.info.logicalSectorSize === 4096 ? 4096 : 512),
            });
    try {
      await copyDisk(reader, writer, options);
    } finally {
      await writer.close();
    }
  } finally {
    await reader.close();
  }
}
