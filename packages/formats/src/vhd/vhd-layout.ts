import { basename, dirname, relative } from 'node:path';
import { InputError } from '@replikit/core';
import { isPowerOfTwo, roundUp } from '../cursor.js';
import { PLATFORM, VHD_MAX_SIZE, type VhdParentLocator, vhdBitmapSize } from './vhd-structs.js';

/** The parent a differencing VHD points at. */
export interface VhdParentRef {
  /** The parent's path (written into the locators, relative to the child and absolute). */
  path: string;
  /** The parent footer's unique id (16 bytes). */
  uniqueId: Uint8Array;
  /** The parent footer's time stamp. */
  timestamp: number;
}

/** Where everything of a new dynamic or differencing VHD goes. */
export interface VhdLayout {
  size: number;
  blockSize: number;
  bitmapSize: number;
  entries: number;
  tableOffset: number;
  locators: VhdParentLocator[];
  locatorData: { offset: number; bytes: Uint8Array }[];
  /** Where the first block may start. */
  dataStart: number;
}

/** Default VHD block size: 2 MiB, the only one Windows accepts. */
export const VHD_DEFAULT_BLOCK_SIZE = 2 * 1024 * 1024;

/** Checks the size and block size of a new VHD and lays it out. */
export function vhdLayout(
  requestedSize: number,
  blockSize: number,
  childPath: string | undefined,
  parent: VhdParentRef | undefined,
): VhdLayout {
  if (!Number.isSafeInteger(requestedSize) || requestedSize < 0) {
    throw new InputError(`VHD size ${requestedSize} is not a whole number of bytes`);
  }
  const size = roundUp(requestedSize, 512);
  if (size > VHD_MAX_SIZE) throw new InputError(`VHD size ${size} is larger than the VHD maximum (2040 GiB)`);
  if (!isPowerOfTwo(blockSize) || blockSize < 512 * 8 || blockSize > 256 * 1024 * 1024) {
    throw new InputError(`VHD block size ${blockSize} must be a power of two from 4 KiB to 256 MiB`);
  }
  const entries = Math.ceil(size / blockSize);
  const tableOffset = 1536;
  let at = tableOffset + roundUp(Math.max(entries, 1) * 4, 512);
  const locators: VhdParentLocator[] = [];
  const locatorData: { offset: number; bytes: Uint8Array }[] = [];
  if (parent) {
    const rel = childPath ? relative(dirname(childPath), parent.path) : basename(parent.path);
    const relWin = `.\\${rel.replace(/\//g, '\\')}`;
    for (const [code, text] of [
      [PLATFORM.W2ru, relWin],
      [PLATFORM.W2ku, parent.path],
    ] as const) {
      const bytes = new Uint8Array(Buffer.from(text, 'utf16le'));
      const space = roundUp(Math.max(bytes.length, 1), 512);
      locators.push({ platformCode: code, dataSpace: space, dataLength: bytes.length, dataOffset: at });
      locatorData.push({ offset: at, bytes });
      at += space;
    }
  }
  return {
    size,
    blockSize,
    bitmapSize: vhdBitmapSize(blockSize),
    entries,
    tableOffset,
    locators,
    locatorData,
    dataStart: roundUp(at, 4096),
  };
}
