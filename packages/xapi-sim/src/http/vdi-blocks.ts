import { constants } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { isZero } from '@replikit/formats';

/** The VHD block size XAPI uses, 2 MiB. */
export const VHD_BLOCK = 2 * 1024 * 1024;

/** Opens a VDI file for reading, never following a link. */
export function openVdiRead(path: string): Promise<FileHandle> {
  return open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
}

/** Reads 2 MiB block `index` of a file (shorter at the end). */
export async function readBlock(fh: FileHandle, index: number, size: number): Promise<Uint8Array> {
  const offset = index * VHD_BLOCK;
  const length = Math.min(VHD_BLOCK, size - offset);
  const buf = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(buf, done, length - done, offset + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return buf;
}

/**
 * The 2 MiB blocks to send in a VHD export: the non-zero ones, or, relative to a base, those
 * whose bytes differ from the base's.
 */
export async function exportBlocks(vdi: FileHandle, size: number, base?: FileHandle): Promise<number[]> {
  const out: number[] = [];
  const count = Math.ceil(size / VHD_BLOCK);
  for (let i = 0; i < count; i++) {
    const data = await readBlock(vdi, i, size);
    if (base === undefined) {
      if (!isZero(data)) out.push(i);
    } else {
      const old = await readBlock(base, i, size);
      if (Buffer.compare(data, old) !== 0) out.push(i);
    }
  }
  return out;
}

/** The 16 bytes of a uuid string, used as a VHD unique id so chains of exports match. */
export function uuidBytes(uuid: string): Uint8Array {
  return Buffer.from(uuid.replace(/-/g, ''), 'hex');
}
