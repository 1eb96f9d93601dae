import { readSync, writeSync, writevSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';

/** The I/O unit of copies, commits and zero checks: 1 MiB. */
export const IO_CHUNK = 1024 * 1024;

/** A 1 MiB buffer of zeros. Never write into it. */
export const ZEROS: Buffer = Buffer.alloc(IO_CHUNK);

/**
 * Whether positional reads and writes run synchronously on the calling thread. A 64 KiB read that
 * hits the page cache takes ~10 µs; the same read through libuv's thread pool costs a round trip
 * of two thread wake-ups, measured at 150–400 µs on a 2-core VM and far more when many are queued.
 * The file driver's work is mostly such small I/O (scattered changed blocks, overlay records), so
 * it is done inline, one call at most {@link IO_CHUNK} long, and the event loop is given a turn at
 * least every 20 ms. `REPLIKIT_FILE_IO=threadpool` in the environment restores asynchronous I/O,
 * for images on storage slow enough that blocking the event loop matters more.
 */
export const SYNC_IO: boolean = process.env.REPLIKIT_FILE_IO !== 'threadpool';

/** Longest stretch of inline I/O before the event loop gets a turn. */
const YIELD_EVERY_MS = 20;
let lastYield = performance.now();

/** Gives the event loop a turn when inline I/O has held it for {@link YIELD_EVERY_MS}. */
async function yieldSometimes(): Promise<void> {
  const now = performance.now();
  if (now - lastYield < YIELD_EVERY_MS) return;
  await new Promise<void>((resolve) => setImmediate(resolve));
  lastYield = performance.now();
}

/** True when every byte of `data` is zero (memcmp against {@link ZEROS}, no per-byte loop in JS). */
export function isAllZero(data: Uint8Array): boolean {
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  for (let at = 0; at < buf.length; at += IO_CHUNK) {
    const end = Math.min(at + IO_CHUNK, buf.length);
    if (!buf.subarray(at, end).equals(ZEROS.subarray(0, end - at))) return false;
  }
  return true;
}

/**
 * Reads `length` bytes at file position `position` into `buffer` at `offset`, looping over short
 * reads. Returns the number of bytes read: less than `length` only at the end of the file.
 */
export async function readFully(
  fh: FileHandle,
  buffer: Uint8Array,
  offset: number,
  length: number,
  position: number,
): Promise<number> {
  let done = 0;
  if (SYNC_IO) {
    while (done < length) {
      const n = readSync(fh.fd, buffer, offset + done, length - done, position + done);
      if (n === 0) break;
      done += n;
    }
    await yieldSometimes();
    return done;
  }
  while (done < length) {
    const { bytesRead } = await fh.read(buffer, offset + done, length - done, position + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done;
}

/** Writes all of `data` at file position `position`, looping over short writes. */
export async function writeFully(fh: FileHandle, data: Uint8Array, position: number): Promise<void> {
  let done = 0;
  if (SYNC_IO) {
    while (done < data.length) done += writeSync(fh.fd, data, done, data.length - done, position + done);
    await yieldSometimes();
    return;
  }
  while (done < data.length) {
    const { bytesWritten } = await fh.write(data, done, data.length - done, position + done);
    done += bytesWritten;
  }
}

/** Writes all of `parts`, one after the other, at file position `position` (one `writev` when it can). */
export async function writevFully(fh: FileHandle, parts: Uint8Array[], position: number): Promise<void> {
  const total = parts.reduce((n, p) => n + p.length, 0);
  let bytesWritten: number;
  if (SYNC_IO) {
    bytesWritten = writevSync(fh.fd, parts, position);
    await yieldSometimes();
  } else ({ bytesWritten } = await fh.writev(parts, position));
  if (bytesWritten === total) return;
  // A short writev: finish part by part.
  let skip = bytesWritten;
  let at = position + bytesWritten;
  for (const part of parts) {
    if (skip >= part.length) {
      skip -= part.length;
      continue;
    }
    const rest = part.subarray(skip);
    skip = 0;
    await writeFully(fh, rest, at);
    at += rest.length;
  }
}

/** Granularity of {@link zeroRange}'s checks: a file system block. */
const ZERO_CHECK = 4096;

/**
 * Makes `[offset, offset + length)` of the file read as zero, touching only what needs it: the range
 * is read in 1 MiB chunks and zeros are written only over the 4 KiB blocks (aligned on the file)
 * that hold a non-zero byte. Holes stay holes, a range that already reads as zero costs reads only,
 * and no block that was unallocated gets allocated, so it works on a full file system.
 *
 * @param scratch - A buffer of at least `min(length, IO_CHUNK)` bytes the function may overwrite.
 */
export async function zeroRange(fh: FileHandle, offset: number, length: number, scratch: Buffer): Promise<void> {
  const step = Math.min(IO_CHUNK, scratch.length);
  const end = offset + length;
  for (let at = offset; at < end; at += step) {
    const n = Math.min(step, end - at);
    const got = await readFully(fh, scratch, 0, n, at);
    let run = -1; // start (file offset) of a run of blocks to zero
    for (let block = at; block < at + got; ) {
      const next = Math.min((Math.floor(block / ZERO_CHECK) + 1) * ZERO_CHECK, at + got);
      const dirty = !isAllZero(scratch.subarray(block - at, next - at));
      if (dirty && run < 0) run = block;
      if (!dirty && run >= 0) {
        await writeFully(fh, ZEROS.subarray(0, block - run), run);
        run = -1;
      }
      block = next;
    }
    if (run >= 0) await writeFully(fh, ZEROS.subarray(0, at + got - run), run);
  }
}

/** The pieces of at most `max` bytes that `extents` split into, in order. */
export function* splitExtents(
  extents: Iterable<{ offset: number; length: number }>,
  max: number,
): Generator<{ offset: number; length: number }> {
  for (const e of extents) {
    for (let at = e.offset; at < e.offset + e.length; at += max) {
      yield { offset: at, length: Math.min(max, e.offset + e.length - at) };
    }
  }
}

/**
 * Runs `work` on every item of `items` with at most `concurrency` calls in flight, each call given
 * the index of its lane (to reuse a buffer per lane). Stops at the first failure and rejects with it
 * once the calls in flight have settled.
 */
export async function forEachConcurrently<T>(
  items: Iterable<T>,
  concurrency: number,
  work: (item: T, lane: number) => Promise<void>,
): Promise<void> {
  const iterator = items[Symbol.iterator]();
  let failed: { error: unknown } | undefined;
  const lane = async (index: number): Promise<void> => {
    while (!failed) {
      const next = iterator.next();
      if (next.done) return;
      try {
        await work(next.value, index);
      } catch (error) {
        failed ??= { error };
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, (_, i) => lane(i)));
  if (failed) throw failed.error;
}
