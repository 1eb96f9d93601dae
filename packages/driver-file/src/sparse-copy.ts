import { constants } from 'node:fs';
import { copyFile, type FileHandle, lstat, rm } from 'node:fs/promises';
import { ConflictError, FormatError, throwIfAborted, toStorageError } from '@replikit/core';
import { ALLOCATION_GRANULE, AllocationMap } from './allocation-map.js';
import { forEachConcurrently, IO_CHUNK, isAllZero, readFully, splitExtents, writeFully } from './block-io.js';
import { CREATE, openDataFile, READ } from './data-file.js';

/** Pieces of a granule copy in flight at once. */
export const COPY_LANES = 8;

/** How {@link copyDiskImage} copied an image. */
export interface CopyResult {
  /** `reflink`: the file system cloned the file (copy-on-write); `sparse`: a block copy that kept holes. */
  method: 'reflink' | 'sparse';
  /** The allocation map of the copy (sparse copies only; a reflinked copy has none). */
  map?: AllocationMap;
  /** Bytes actually written by a sparse copy (0 for a reflink). */
  bytesWritten: number;
}

/** Options of {@link copyDiskImage}. */
export interface CopyOptions {
  /** Cancels the copy (the caller removes the partial destination). */
  signal?: AbortSignal;
  /**
   * Try a copy-on-write clone first (`COPYFILE_FICLONE_FORCE`, works on btrfs, XFS, bcachefs…).
   * @default true
   */
  reflink?: boolean;
}

/**
 * Copies the raw image `src` (which must be exactly `size` bytes) to `dst`.
 *
 * It first asks the file system for a reflink clone; when that is not supported (ext4, tmpfs…) it
 * falls back to a sparse copy: the image is read in 1 MiB chunks (the next chunk is read while the
 * current one is written), only the non-zero 64 KiB blocks are written into a destination truncated
 * to `size` (so holes stay holes), and an {@link AllocationMap} of the written blocks is returned.
 * The destination is fsynced.
 *
 * @throws {@link @replikit/core!FormatError} when the source is shorter than `size`.
 * @throws A storage error (`E_NO_SPACE`, `E_IO`) naming the file, or `E_ABORTED`.
 */
export async function copyDiskImage(
  src: string,
  dst: string,
  size: number,
  options: CopyOptions = {},
): Promise<CopyResult> {
  throwIfAborted(options.signal);
  let input: FileHandle | undefined;
  let output: FileHandle | undefined;
  let pending: Promise<number> | undefined;
  try {
    // opened first, without following a link: the clone below copies this very file
    input = await openDataFile(src, READ, { what: 'a disk image' });
    if (options.reflink !== false && (await cloned(src, dst, input))) return { method: 'reflink', bytesWritten: 0 };
    output = await openDataFile(dst, CREATE, { what: 'a disk image copy' });
    await output.truncate(size);
    const map = new AllocationMap(size);
    const buffers = [Buffer.allocUnsafeSlow(IO_CHUNK), Buffer.allocUnsafeSlow(IO_CHUNK)] as const;
    const readAt = (which: 0 | 1, position: number): Promise<number> => {
      const p = readFully(input!, buffers[which], 0, Math.min(IO_CHUNK, size - position), position);
      p.catch(() => undefined); // awaited below; this only avoids an unhandled rejection on early exit
      return p;
    };
    let bytesWritten = 0;
    let which: 0 | 1 = 0;
    if (size > 0) pending = readAt(0, 0);
    for (let position = 0; position < size; position += IO_CHUNK) {
      throwIfAborted(options.signal);
      const length = Math.min(IO_CHUNK, size - position);
      const got = await pending!;
      if (got < length) {
        throw new FormatError(
          `image ${src} ended at ${position + got} bytes while copying ${size}; it shrank during the copy`,
          {
            details: { path: src, size },
          },
        );
      }
      const chunk = buffers[which];
      which = which === 0 ? 1 : 0;
      pending = position + IO_CHUNK < size ? readAt(which, position + IO_CHUNK) : undefined;
      bytesWritten += await writeNonZeroBlocks(output, chunk.subarray(0, length), position, map);
    }
    await output.sync();
    return { method: 'sparse', map, bytesWritten };
  } catch (error) {
    throw toStorageError(error, `copying ${src} to ${dst}`);
  } finally {
    await pending?.catch(() => undefined);
    await input?.close();
    await output?.close();
  }
}

/**
 * Asks the file system for a copy-on-write clone of `src` (open as `input`) at `dst`. Returns
 * false when cloning is not supported here. The clone copies by name, so `src` is checked to be
 * still the file `input` holds (not swapped for a link meanwhile); if not, the clone is removed.
 */
async function cloned(src: string, dst: string, input: FileHandle): Promise<boolean> {
  try {
    await copyFile(src, dst, constants.COPYFILE_FICLONE_FORCE);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOSPC' || code === 'EDQUOT' || code === 'ENOENT') throw toStorageError(error, `cloning ${src}`);
    return false; // Not supported here (ENOTSUP, EXDEV, EINVAL…): the caller makes a sparse copy.
  }
  const [opened, named] = await Promise.all([input.stat(), lstat(src)]);
  if (opened.dev !== named.dev || opened.ino !== named.ino) {
    await rm(dst, { force: true });
    throw new ConflictError(`${src} was replaced while it was being cloned; retry`, { details: { path: src } });
  }
  return true;
}

/**
 * Writes the non-zero {@link ALLOCATION_GRANULE} blocks of `chunk` (which starts at `position`, a
 * multiple of the granule) into `fh`, merging neighbours into one write, and sets their bits.
 *
 * @returns The number of bytes written.
 */
export async function writeNonZeroBlocks(
  fh: FileHandle,
  chunk: Uint8Array,
  position: number,
  map: AllocationMap,
): Promise<number> {
  let written = 0;
  let runStart = -1;
  const flushRun = async (end: number): Promise<void> => {
    await writeFully(fh, chunk.subarray(runStart, end), position + runStart);
    written += end - runStart;
    runStart = -1;
  };
  for (let at = 0; at < chunk.length; at += ALLOCATION_GRANULE) {
    const end = Math.min(at + ALLOCATION_GRANULE, chunk.length);
    if (!isAllZero(chunk.subarray(at, end))) {
      map.set((position + at) / ALLOCATION_GRANULE);
      if (runStart < 0) runStart = at;
    } else if (runStart >= 0) {
      await flushRun(at);
    }
  }
  if (runStart >= 0) await flushRun(chunk.length);
  return written;
}

/**
 * Copies the granules marked in `dirty` from the raw image `src` (exactly `size` bytes) into a new
 * sparse file `dst` of `size` bytes, at their natural offsets: runs of marked granules are read in
 * chunks of up to 1 MiB, and only their non-zero granules are written (a marked granule that reads
 * as zero stays a hole, which reads as zero too). The destination is fsynced.
 *
 * @returns The number of bytes written.
 * @throws {@link @replikit/core!FormatError} when the source is shorter than a marked granule.
 * @throws A storage error (`E_NO_SPACE`, `E_IO`) naming the file, or `E_ABORTED`.
 */
export async function copyDirtyGranules(
  src: string,
  dst: string,
  size: number,
  dirty: AllocationMap,
  options: { signal?: AbortSignal | undefined } = {},
): Promise<number> {
  throwIfAborted(options.signal);
  let input: FileHandle | undefined;
  let output: FileHandle | undefined;
  try {
    input = await openDataFile(src, READ, { what: 'a disk image' });
    output = await openDataFile(dst, CREATE, { what: 'a disk image copy' });
    await output.truncate(size);
    const scratch = new AllocationMap(size, dirty.granule);
    const buffers = Array.from({ length: COPY_LANES }, () => Buffer.allocUnsafeSlow(IO_CHUNK));
    let bytesWritten = 0;
    // Several pieces in flight: scattered granules cost one round trip each, not their bytes.
    await forEachConcurrently(splitExtents(dirty.extents(), IO_CHUNK), COPY_LANES, async (piece, lane) => {
      throwIfAborted(options.signal);
      const buffer = buffers[lane]!;
      const got = await readFully(input!, buffer, 0, piece.length, piece.offset);
      if (got < piece.length) {
        throw new FormatError(`image ${src} ended at ${piece.offset + got} bytes while copying ${size}; it shrank`, {
          details: { path: src, size },
        });
      }
      bytesWritten += await writeNonZeroBlocks(output!, buffer.subarray(0, piece.length), piece.offset, scratch);
    });
    await output.sync();
    return bytesWritten;
  } catch (error) {
    throw toStorageError(error, `copying the changed blocks of ${src} to ${dst}`);
  } finally {
    await input?.close();
    await output?.close();
  }
}
