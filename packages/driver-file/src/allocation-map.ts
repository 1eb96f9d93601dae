import { crc32 } from 'node:zlib';
import { type Extent, FormatError } from '@replikit/core';

/** Granularity of an allocation map: one bit per 64 KiB. */
export const ALLOCATION_GRANULE = 64 * 1024;

const MAGIC = 'RKALLOC1';
const VERSION = 1;
/** Size of the binary header of an encoded map. */
export const ALLOCATION_HEADER_SIZE = 32;

/**
 * Which 64 KiB blocks of a disk image hold data: one bit per block, least significant bit first.
 * Written next to each frozen snapshot image (`<file>.alloc`) by the sparse copy so that a snapshot
 * reader's `allocated()` is exact without reading the image again.
 *
 * Encoded layout (little endian): `"RKALLOC1"`, u32 version (1), u32 granule, u64 disk size,
 * u32 CRC-32 of the bitmap, u32 CRC-32 of the 28 header bytes before it, then the bitmap bytes.
 */
export class AllocationMap {
  /** Virtual size of the disk in bytes. */
  readonly size: number;
  /** Bytes per bit. */
  readonly granule: number;
  /** The bitmap: bit `i` covers `[i * granule, (i + 1) * granule)`. */
  readonly bits: Uint8Array;

  /**
   * @param size - Disk size in bytes.
   * @param granule - Bytes per bit (a power of two).
   * @param bits - The bitmap; a new all-clear bitmap when omitted.
   */
  constructor(size: number, granule = ALLOCATION_GRANULE, bits?: Uint8Array) {
    this.size = size;
    this.granule = granule;
    const length = AllocationMap.bitmapLength(size, granule);
    if (bits && bits.length !== length) throw new RangeError(`bitmap has ${bits.length} bytes, expected ${length}`);
    this.bits = bits ?? new Uint8Array(length);
  }

  /** Number of bitmap bytes for a disk of `size` bytes. */
  static bitmapLength(size: number, granule = ALLOCATION_GRANULE): number {
    return Math.ceil(Math.ceil(size / granule) / 8);
  }

  /** Marks block `index` as holding data. */
  set(index: number): void {
    this.bits[index >>> 3]! |= 1 << (index & 7);
  }

  /** True when block `index` holds data. */
  has(index: number): boolean {
    return ((this.bits[index >>> 3] ?? 0) & (1 << (index & 7))) !== 0;
  }

  /**
   * Marks blocks `first` to `last` (inclusive).
   *
   * @returns The range of bitmap bytes that changed (`[start, end)`), or `undefined` when every bit was already set.
   */
  setRange(first: number, last: number): { start: number; end: number } | undefined {
    let start = -1;
    let end = -1;
    for (let index = first; index <= last; index++) {
      const byte = index >>> 3;
      const bit = 1 << (index & 7);
      const value = this.bits[byte]!;
      if ((value & bit) !== 0) continue;
      this.bits[byte] = value | bit;
      if (start < 0) start = byte;
      end = byte + 1;
    }
    return start < 0 ? undefined : { start, end };
  }

  /** Sets every bit that is set in `other` (a map of the same size and granule). */
  union(other: AllocationMap): this {
    if (other.bits.length !== this.bits.length || other.granule !== this.granule) {
      throw new RangeError('union of allocation maps of different sizes or granules');
    }
    for (let i = 0; i < this.bits.length; i++) this.bits[i]! |= other.bits[i]!;
    return this;
  }

  /** A copy of this map. */
  clone(): AllocationMap {
    return new AllocationMap(this.size, this.granule, this.bits.slice());
  }

  /** True when no bit is set. */
  isEmpty(): boolean {
    return this.bits.every((b) => b === 0);
  }

  /** The allocated extents: runs of set bits merged, ascending, the last one clipped to the disk size. */
  *extents(): Generator<Extent> {
    const blocks = Math.ceil(this.size / this.granule);
    let start = -1;
    for (let byte = 0; byte < this.bits.length; byte++) {
      const value = this.bits[byte]!;
      if ((value === 0 && start < 0) || (value === 0xff && start >= 0)) continue; // whole byte: no change
      for (let bit = 0; bit < 8; bit++) {
        const index = byte * 8 + bit;
        if (index >= blocks) break;
        const set = (value & (1 << bit)) !== 0;
        if (set && start < 0) start = index;
        else if (!set && start >= 0) {
          yield this.extent(start, index);
          start = -1;
        }
      }
    }
    if (start >= 0) yield this.extent(start, blocks);
  }

  /** Serialises the map with its header and checksums. */
  encode(): Uint8Array {
    const out = Buffer.alloc(ALLOCATION_HEADER_SIZE + this.bits.length);
    out.write(MAGIC, 0, 'latin1');
    out.writeUInt32LE(VERSION, 8);
    out.writeUInt32LE(this.granule, 12);
    out.writeBigUInt64LE(BigInt(this.size), 16);
    out.writeUInt32LE(crc32(this.bits), 24);
    out.writeUInt32LE(crc32(out.subarray(0, 28)), 28);
    out.set(this.bits, ALLOCATION_HEADER_SIZE);
    return out;
  }

  /**
   * Parses an encoded map and checks it describes a disk of `expectedSize` bytes.
   *
   * @param file - The sidecar's path, named in error messages.
   * @throws {@link @replikit/core!FormatError} for a bad magic, version, checksum, size or length.
   */
  static decode(data: Uint8Array, expectedSize: number, file: string): AllocationMap {
    const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    const fail = (why: string): never => {
      throw new FormatError(`allocation map ${file} is unusable (${why}); delete the snapshot and take a new one`, {
        details: { file },
      });
    };
    if (buf.length < ALLOCATION_HEADER_SIZE || buf.toString('latin1', 0, 8) !== MAGIC) fail('bad magic');
    if (buf.readUInt32LE(28) !== crc32(buf.subarray(0, 28))) fail('header checksum mismatch');
    if (buf.readUInt32LE(8) !== VERSION) fail(`unknown version ${buf.readUInt32LE(8)}`);
    const granule = buf.readUInt32LE(12);
    if (granule < 512 || (granule & (granule - 1)) !== 0) fail(`granule ${granule} is not a power of two ≥ 512`);
    const size = buf.readBigUInt64LE(16);
    if (size !== BigInt(expectedSize)) fail(`it describes ${size} bytes, the disk has ${expectedSize}`);
    const bits = buf.subarray(ALLOCATION_HEADER_SIZE);
    if (bits.length !== AllocationMap.bitmapLength(expectedSize, granule)) fail(`bitmap has ${bits.length} bytes`);
    if (buf.readUInt32LE(24) !== crc32(bits)) fail('bitmap checksum mismatch');
    return new AllocationMap(expectedSize, granule, new Uint8Array(bits));
  }

  private extent(startBlock: number, endBlock: number): Extent {
    const offset = startBlock * this.granule;
    return { offset, length: Math.min(endBlock * this.granule, this.size) - offset };
  }
}
