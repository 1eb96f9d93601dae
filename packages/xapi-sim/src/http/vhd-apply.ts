import type { FileHandle } from 'node:fs/promises';
import { isZero } from '@replikit/formats';
import { fault } from '../xapi-fault.js';

const FREE = 0xffffffff;
const MAX_BLOCK = 256 * 1024 * 1024;

async function readAt(fh: FileHandle, offset: number, length: number, fileSize: number, what: string): Promise<Buffer> {
  if (!Number.isSafeInteger(offset) || offset < 0 || length < 0 || offset + length > fileSize) {
    throw fault('VDI_IO_ERROR', `VHD ${what} at ${offset} (+${length}) lies outside the ${fileSize}-byte upload`);
  }
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
 * Applies a dynamic or differencing VHD (read from `src`) onto a VDI file as XAPI's vhd-tool does:
 * only the sectors the allocated blocks' bitmaps mark are written, at their virtual offsets;
 * everything else in the VDI stays as it was.
 */
export async function applyVhd(
  src: FileHandle,
  srcSize: number,
  write: (offset: number, data: Uint8Array) => Promise<void>,
  vdiSize: number,
): Promise<void> {
  const footer = await readAt(src, 0, 512, srcSize, 'footer');
  if (footer.toString('latin1', 0, 8) !== 'conectix') throw fault('VDI_IO_ERROR', 'the upload is not a VHD');
  const diskType = footer.readUInt32BE(60);
  const virtualSize = Number(footer.readBigUInt64BE(48));
  if (diskType === 2) throw fault('VDI_IO_ERROR', 'a fixed VHD is not a stream; send it as raw');
  if (diskType !== 3 && diskType !== 4) throw fault('VDI_IO_ERROR', `VHD disk type ${diskType} is unknown`);
  const headerOffset = Number(footer.readBigUInt64BE(16));
  const header = await readAt(src, headerOffset, 1024, srcSize, 'header');
  if (header.toString('latin1', 0, 8) !== 'cxsparse') throw fault('VDI_IO_ERROR', 'the VHD header is missing');
  const tableOffset = Number(header.readBigUInt64BE(16));
  const entries = header.readUInt32BE(28);
  const blockSize = header.readUInt32BE(32);
  if (
    blockSize < 512 ||
    blockSize > MAX_BLOCK ||
    blockSize % 512 !== 0 ||
    entries * blockSize < virtualSize - blockSize
  ) {
    throw fault('VDI_IO_ERROR', `VHD block size ${blockSize} or table of ${entries} entries is invalid`);
  }
  const bat = await readAt(src, tableOffset, entries * 4, srcSize, 'block table');
  const bitmapSize = Math.ceil(blockSize / 512 / 8 / 512) * 512;
  for (let b = 0; b < entries; b++) {
    const sector = bat.readUInt32BE(b * 4);
    if (sector === FREE) continue;
    const blockStart = b * blockSize;
    if (blockStart >= virtualSize) continue;
    const bitmap = await readAt(src, sector * 512, bitmapSize, srcSize, `bitmap of block ${b}`);
    const length = Math.min(blockSize, virtualSize - blockStart);
    const dataAt = sector * 512 + bitmapSize;
    // write runs of consecutive marked sectors
    let s = 0;
    const sectors = Math.ceil(length / 512);
    while (s < sectors) {
      if (!((bitmap[s >> 3]! >> (7 - (s & 7))) & 1)) {
        s++;
        continue;
      }
      let e = s;
      while (e < sectors && (bitmap[e >> 3]! >> (7 - (e & 7))) & 1) e++;
      const runLength = Math.min(e * 512, length) - s * 512;
      const data = await readAt(src, dataAt + s * 512, runLength, srcSize, `data of block ${b}`);
      // qemu-img rounds a VHD up to its CHS geometry: bytes past the VDI's end must be zeros
      const inside = Math.max(0, Math.min(data.length, vdiSize - (blockStart + s * 512)));
      if (!isZero(data.subarray(inside))) {
        throw fault('VDI_IO_ERROR', `the VHD has data past the ${vdiSize}-byte end of the VDI`);
      }
      if (inside > 0) await write(blockStart + s * 512, data.subarray(0, inside));
      s = e;
    }
  }
}
