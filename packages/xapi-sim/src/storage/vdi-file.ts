import { execFile } from 'node:child_process';
import { constants } from 'node:fs';
import { lstat, mkdir, open, rm } from 'node:fs/promises';
import { promisify } from 'node:util';
import { isZero } from '@replikit/formats';

const CHUNK = 1 << 20;
const NO_FOLLOW = constants.O_NOFOLLOW;
const runFile = promisify(execFile);

/** Creates the sparse data file of a VDI (`virtualSize` bytes of holes). */
export async function createVdiFile(path: string, virtualSize: number): Promise<void> {
  await mkdir(path.slice(0, path.lastIndexOf('/')), { recursive: true });
  const fh = await open(path, constants.O_CREAT | constants.O_EXCL | constants.O_RDWR | NO_FOLLOW, 0o600);
  try {
    await fh.truncate(virtualSize);
  } finally {
    await fh.close();
  }
}

/**
 * Copies a VDI file into a new sparse file: holes stay holes. A real SR snapshots or clones a VHD
 * in O(1) (a new child in the chain); the simulator copies the file, so the copy must cost what is
 * allocated, not the virtual size. GNU `cp --sparse=always` walks the allocation with
 * `SEEK_DATA`/`SEEK_HOLE` (tens of milliseconds for a 4 GiB disk with 40 MiB written); where it is
 * missing or refuses, a read loop that skips zero MiBs does the same, more slowly.
 */
export async function copyVdiFile(from: string, to: string): Promise<void> {
  const st = await lstat(from);
  if (!st.isFile()) throw new Error(`VDI data file ${from} is not a regular file`);
  await createVdiFile(to, st.size); // claims the name (O_EXCL): never copies over another VDI
  if (await copyWithCp(from, to, st.size)) return;
  await copyByReading(from, to, st.size);
}

/** `cp --sparse=always` over the claimed (empty) destination; false when it did not work here. */
async function copyWithCp(from: string, to: string, size: number): Promise<boolean> {
  try {
    // Arguments only, no shell; both paths are the simulator's own (`<sr>/<uuid>.img`).
    await runFile('cp', ['--sparse=always', '--no-dereference', '--', from, to]);
    const copied = await lstat(to);
    if (copied.isFile() && copied.size === size) return true;
  } catch {
    // not GNU cp, or no cp: fall through
  }
  await truncateEmpty(to, size);
  return false;
}

async function truncateEmpty(path: string, size: number): Promise<void> {
  const fh = await open(path, constants.O_RDWR | constants.O_TRUNC | NO_FOLLOW);
  try {
    await fh.truncate(size);
  } finally {
    await fh.close();
  }
}

async function copyByReading(from: string, to: string, size: number): Promise<void> {
  const src = await open(from, constants.O_RDONLY | NO_FOLLOW);
  try {
    const dst = await open(to, constants.O_RDWR | NO_FOLLOW);
    try {
      const buf = Buffer.alloc(CHUNK);
      for (let off = 0; off < size; off += CHUNK) {
        const { bytesRead } = await src.read(buf, 0, Math.min(CHUNK, size - off), off);
        const data = buf.subarray(0, bytesRead);
        if (!isZero(data)) await dst.write(data, 0, bytesRead, off);
      }
    } finally {
      await dst.close();
    }
  } finally {
    await src.close();
  }
}

/** Writes bytes into a VDI file at an offset. */
export async function writeVdiFile(path: string, offset: number, data: Uint8Array): Promise<void> {
  const fh = await open(path, constants.O_RDWR | NO_FOLLOW);
  try {
    await fh.write(data, 0, data.length, offset);
  } finally {
    await fh.close();
  }
}

/** Grows (never shrinks) a VDI file. */
export async function resizeVdiFile(path: string, size: number): Promise<void> {
  const fh = await open(path, constants.O_RDWR | NO_FOLLOW);
  try {
    await fh.truncate(size);
  } finally {
    await fh.close();
  }
}

/** Removes a VDI file (missing is fine). */
export async function removeVdiFile(path: string): Promise<void> {
  await rm(path, { force: true });
}
