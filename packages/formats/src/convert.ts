import { type DiskReader, type DiskWriter, type Extent, InputError, throwIfAborted } from '@replikit/core';
import { isZero } from './byte-source.js';
import type { ImageFormat, ImageReader } from './image.js';
import { openDisk } from './open-disk.js';
import { pendingOutput, refuseSameFile } from './output-file.js';
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
  /**
   * Chunks read and written at once.
   * @default 4
   */
  concurrency?: number;
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
  let failed = false;
  const it = pieces();
  // a few chunks in flight at once: reads and writes overlap on libuv's thread pool
  const readInto = (reader as Partial<ImageReader>).readInto?.bind(reader);
  const worker = async () => {
    // one buffer per worker, reused: fresh buffers cost more (page faults) than the copy itself
    const buffer = readInto ? new Uint8Array(chunk) : undefined;
    for (let next = it.next(); !next.done && !failed; next = it.next()) {
      throwIfAborted(options.signal);
      const piece = next.value;
      let bytes: Uint8Array;
      if (readInto && buffer) {
        bytes = buffer.subarray(0, piece.length);
        await readInto(piece.offset, bytes);
      } else {
        bytes = await reader.read(piece.offset, piece.length);
      }
      if (!(skipZero && isZero(bytes))) await writer.write(piece.offset, bytes);
      done += piece.length;
      options.onProgress?.({ done, total });
    }
  };
  const results = await Promise.allSettled(
    Array.from({ length: Math.max(1, options.concurrency ?? 4) }, () =>
      worker().catch((error) => {
        failed = true;
        throw error;
      }),
    ),
  );
  const rejected = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (rejected) throw rejected.reason;
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
  /**
   * fsync the output before returning, so it survives a crash of the host.
   * @default true
   */
  sync?: boolean;
}

/**
 * Converts the image at `input` (any format, a differencing chain flattened) into a new image at
 * `output`. The image is written to a temporary file beside `output` and renamed over it when
 * complete (fsynced unless `sync: false`): a failure leaves no partial file and an existing
 * `output` untouched. An `output` that is a symbolic link (to another file) is replaced by the new
 * image, not written through.
 *
 * @throws {@link @replikit/core!InputError} when `output` is the input file or one of its parents
 * (same device and inode: the same path, a symbolic or a hard link), or exists and is not a
 * regular file.
 *
 * @example
 * ```ts
 * await convertDisk('/images/xen.vhd', '/images/hyperv.vhdx', { to: 'vhdx', blockSize: 32 * 2 ** 20 });
 * ```
 */
export async function convertDisk(input: string, output: string, options: ConvertOptions): Promise<void> {
  const reader = await openDisk(input, { scanRawHoles: false });
  try {
    await refuseSameFile(reader, output);
    const sync = options.sync ?? true;
    // written beside the output and renamed over it once complete: the input is read in full
    // before anything at `output` changes, and a failure leaves an existing output as it was
    const pending = await pendingOutput(output);
    try {
      const writer = await createWriter(pending.path, reader, options, sync);
      try {
        await copyDisk(reader, writer, options);
      } finally {
        await writer.close();
      }
      await pending.commit(sync);
    } finally {
      await pending.discard();
    }
  } finally {
    await reader.close();
  }
}

async function createWriter(path: string, reader: ImageReader, options: ConvertOptions, sync: boolean) {
  const type = options.subformat ?? 'dynamic';
  const blockSize = options.blockSize ? { blockSize: options.blockSize } : {};
  if (options.to === 'raw') return createRaw(path, { size: reader.size, sync });
  if (options.to === 'vhd') return createVhd(path, { size: reader.size, type, sync, ...blockSize });
  return createVhdx(path, {
    size: reader.size,
    type,
    sync,
    ...blockSize,
    logicalSectorSize: options.logicalSectorSize ?? (reader.info.logicalSectorSize === 4096 ? 4096 : 512),
  });
}
