import { randomInt } from 'node:crypto';
import type { BigIntStats } from 'node:fs';
import { type FileHandle, rm } from 'node:fs/promises';
import { crc32 } from 'node:zlib';
import { FormatError, toStorageError } from '@replikit/core';
import { ALLOCATION_GRANULE, AllocationMap } from './allocation-map.js';
import { fsyncDir, writeFileAtomic } from './atomic-write.js';
import { readDataFile } from './data-file.js';
import { MAX_NAME_LENGTH } from './names.js';

/** What identifies one state of a live image: size, mtime and ctime (ns), inode. */
export interface ImageStamp {
  /** File size in bytes. */
  size: bigint;
  /** Modification time, ns. */
  mtimeNs: bigint;
  /** Status change time, ns. */
  ctimeNs: bigint;
  /** Inode number. */
  ino: bigint;
}

/** The {@link ImageStamp} of a `stat(…, { bigint: true })` result. */
export function stampOf(stats: BigIntStats): ImageStamp {
  return { size: stats.size, mtimeNs: stats.mtimeNs, ctimeNs: stats.ctimeNs, ino: stats.ino };
}

/**
 * Gives the open image a modification time of the driver's own (now, minus a random fraction of a
 * millisecond) and returns its new stamp. A later write by anything else sets the kernel's
 * tick-granular time instead, so it changes the stamp even within the same clock tick.
 */
export async function stampWithOwnTime(fh: FileHandle): Promise<ImageStamp> {
  const now = Date.now() / 1000;
  await fh.utimes(now, now - randomInt(1, 1_000_000) / 1e9);
  return stampOf(await fh.stat({ bigint: true }));
}

/** True when two stamps are equal field by field. */
export function sameStamp(a: ImageStamp, b: ImageStamp): boolean {
  return a.size === b.size && a.mtimeNs === b.mtimeNs && a.ctimeNs === b.ctimeNs && a.ino === b.ino;
}

const MAGIC = 'RKCBT001';
const VERSION = 1;
/** Size of the fixed header of a `.cbt` file; the bitmap follows it. */
export const CBT_HEADER_SIZE = 512;
const EPOCH_AT = 62;
const BITMAP_CRC_AT = 504;
const HEADER_CRC_AT = 508;
const FLAG_SESSION_OPEN = 1;

/**
 * The dirty bitmap of one disk of a VM with change tracking (`<image>.cbt` next to the image): one bit
 * per 64 KiB granule written since the snapshot `epoch` (empty: since the VM was created), plus the
 * image's {@link ImageStamp} right after the last write the driver tracked. A stamp that no longer
 * matches the image means something wrote it behind the driver's back (or a crash came between a
 * write and the stamp update): the bitmap is then not trusted.
 *
 * Encoded layout (little endian): `"RKCBT001"`, u32 version (1), u32 granule, u64 disk size, u64
 * stamp size, u64 mtimeNs, u64 ctimeNs, u64 ino, u32 flags (1: a write session is open), u16 epoch length, the epoch (ASCII, at most 200
 * bytes), zero padding to byte 504, u32 CRC-32 of the bitmap, u32 CRC-32 of bytes 0–507; the bitmap
 * starts at byte 512.
 */
export class ChangeBitmap {
  /** Id of the snapshot the bits count from; `''` for "since the VM was created". */
  epoch: string;
  /** The image's stamp after the last tracked write. */
  stamp: ImageStamp;
  /** The dirty bits. */
  readonly map: AllocationMap;
  /**
   * Set (durably) while a guest disk handle writes the image: bits are then written without a
   * flush each. A bitmap found with it set was not closed cleanly (a crash) and is not trusted.
   */
  sessionOpen = false;

  /**
   * @param size - Disk size in bytes.
   * @param epoch - Snapshot id the bits count from.
   * @param stamp - The image's current stamp.
   * @param map - The bits; all clear when omitted.
   */
  constructor(size: number, epoch: string, stamp: ImageStamp, map?: AllocationMap) {
    this.epoch = epoch;
    this.stamp = stamp;
    this.map = map ?? new AllocationMap(size, ALLOCATION_GRANULE);
  }

  /** The 512-byte header, with both checksums computed over the current bits. */
  encodeHeader(): Buffer {
    const out = Buffer.alloc(CBT_HEADER_SIZE);
    out.write(MAGIC, 0, 'latin1');
    out.writeUInt32LE(VERSION, 8);
    out.writeUInt32LE(this.map.granule, 12);
    out.writeBigUInt64LE(BigInt(this.map.size), 16);
    out.writeBigUInt64LE(this.stamp.size, 24);
    out.writeBigUInt64LE(this.stamp.mtimeNs, 32);
    out.writeBigUInt64LE(this.stamp.ctimeNs, 40);
    out.writeBigUInt64LE(this.stamp.ino, 48);
    out.writeUInt32LE(this.sessionOpen ? FLAG_SESSION_OPEN : 0, 56);
    const epoch = Buffer.from(this.epoch, 'latin1');
    out.writeUInt16LE(epoch.length, 60);
    epoch.copy(out, EPOCH_AT);
    out.writeUInt32LE(crc32(this.map.bits), BITMAP_CRC_AT);
    out.writeUInt32LE(crc32(out.subarray(0, HEADER_CRC_AT)), HEADER_CRC_AT);
    return out;
  }

  /** The whole file: header and bitmap. */
  encode(): Buffer {
    return Buffer.concat([this.encodeHeader(), this.map.bits]);
  }

  /**
   * Parses a `.cbt` file and checks it describes a disk of `expectedSize` bytes.
   *
   * @param file - The file's path, named in error messages.
   * @throws {@link @replikit/core!FormatError} for a bad magic, version, checksum, size, epoch or length.
   */
  static decode(data: Uint8Array, expectedSize: number, file: string): ChangeBitmap {
    const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    const fail = (why: string): never => {
      throw new FormatError(`change bitmap ${file} is unusable (${why}); the next snapshot copies the whole disk`, {
        details: { file },
      });
    };
    if (buf.length < CBT_HEADER_SIZE || buf.toString('latin1', 0, 8) !== MAGIC) fail('bad magic');
    if (buf.readUInt32LE(HEADER_CRC_AT) !== crc32(buf.subarray(0, HEADER_CRC_AT))) fail('header checksum mismatch');
    if (buf.readUInt32LE(8) !== VERSION) fail(`unknown version ${buf.readUInt32LE(8)}`);
    const granule = buf.readUInt32LE(12);
    if (granule !== ALLOCATION_GRANULE) fail(`granule ${granule} is not ${ALLOCATION_GRANULE}`);
    const size = buf.readBigUInt64LE(16);
    if (size !== BigInt(expectedSize)) fail(`it describes ${size} bytes, the disk has ${expectedSize}`);
    const flags = buf.readUInt32LE(56);
    if ((flags & ~FLAG_SESSION_OPEN) !== 0) fail(`unknown flags ${flags}`);
    const epochLength = buf.readUInt16LE(60);
    if (epochLength > MAX_NAME_LENGTH) fail(`epoch of ${epochLength} bytes`);
    const epoch = buf.toString('latin1', EPOCH_AT, EPOCH_AT + epochLength);
    if (epochLength > 0 && !/^[A-Za-z0-9_-]+$/.test(epoch)) fail('epoch is not a snapshot id');
    const bits = buf.subarray(CBT_HEADER_SIZE);
    if (bits.length !== AllocationMap.bitmapLength(expectedSize, granule)) fail(`bitmap has ${bits.length} bytes`);
    if (buf.readUInt32LE(BITMAP_CRC_AT) !== crc32(bits)) fail('bitmap checksum mismatch');
    const stamp: ImageStamp = {
      size: buf.readBigUInt64LE(24),
      mtimeNs: buf.readBigUInt64LE(32),
      ctimeNs: buf.readBigUInt64LE(40),
      ino: buf.readBigUInt64LE(48),
    };
    const cbt = new ChangeBitmap(
      expectedSize,
      epoch,
      stamp,
      new AllocationMap(expectedSize, granule, new Uint8Array(bits)),
    );
    cbt.sessionOpen = (flags & FLAG_SESSION_OPEN) !== 0;
    return cbt;
  }
}

/** The change bitmap of the image `imagePath`: `<image>.cbt`. */
export function cbtPathOf(imagePath: string): string {
  return `${imagePath}.cbt`;
}

/** What {@link readChangeBitmap} found. */
export type ChangeBitmapRead =
  | { state: 'valid'; cbt: ChangeBitmap }
  | { state: 'missing' }
  | { state: 'corrupt'; reason: string };

/**
 * Reads and checks the `.cbt` file `path` of a disk of `size` bytes; never throws for a bad file. The
 * caller holds the VM lock, so a bitmap whose write session is still marked open was left by a crash
 * and counts as corrupt.
 */
export async function readChangeBitmap(path: string, size: number): Promise<ChangeBitmapRead> {
  let data: Buffer;
  try {
    data = await readDataFile(path, 'a change bitmap');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { state: 'missing' };
    if (error instanceof FormatError) return { state: 'corrupt', reason: error.message }; // a link, a FIFO…
    throw toStorageError(error, `reading ${path}`);
  }
  try {
    const cbt = ChangeBitmap.decode(data, size, path);
    if (cbt.sessionOpen) return { state: 'corrupt', reason: `${path} was left open by a guest writer that stopped` };
    return { state: 'valid', cbt };
  } catch (error) {
    return { state: 'corrupt', reason: (error as Error).message };
  }
}

/** Replaces the `.cbt` file `path` atomically (temporary file, fsync, rename, fsync of the folder). */
export async function writeChangeBitmap(path: string, cbt: ChangeBitmap): Promise<void> {
  await writeFileAtomic(path, cbt.encode());
}

/** Removes the `.cbt` file `path` (tracking is lost) durably. */
export async function dropChangeBitmap(path: string, dir: string): Promise<void> {
  try {
    await rm(path, { force: true });
  } catch (error) {
    throw toStorageError(error, `removing ${path}`);
  }
  await fsyncDir(dir);
}
