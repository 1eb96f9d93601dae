import { constants } from 'node:fs';
import { mkdir, open, rm } from 'node:fs/promises';
import { isZero } from '@replikit/formats';

const CHUNK = 1 << 20;
const NO_FOLLOW = constants.O_NOFOLLOW;

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

/** Copies a VDI file into a new sparse file, skipping zero MiBs (holes stay holes). */
export async function copyVdiFile(from: string, to: string): Promise<void> {
  const src = await open(from, constants.O_RDONLY | NO_FOLLOW);
  try {
    const { size } = await src.stat();
    await createVdiFile(to, size);
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
