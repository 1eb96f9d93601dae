import type { FileHandle } from 'node:fs/promises';
import { crc32 } from 'node:zlib';
import { type Extent, FormatError, throwIfAborted } from '@replikit/core';
import { IO_CHUNK, writeFully, zeroRange } from './block-io.js';

/**
 * Overlay (redo) and undo files share one format: a sequence of records, each a 32-byte header
 * followed by the payload (absent for zero records). Header, little endian:
 *
 * | bytes | field |
 * | --- | --- |
 * | 0–3 | magic `RKOV` |
 * | 4–7 | version (1) |
 * | 8–15 | disk offset (u64) |
 * | 16–23 | length (u64, > 0) |
 * | 24–27 | flags: bit 0 = zero record (no payload; the range reads as zero) |
 * | 28–31 | CRC-32 of the header (with this field 0) followed by the payload |
 *
 * A file is valid up to its first record that is incomplete or fails its checks: that is the torn
 * tail a crash leaves, and it is cut off when the file is opened again.
 */
export const RECORD_HEADER_SIZE = 32;

const MAGIC = 0x564f4b52; // 'RKOV' read as a little-endian u32
const VERSION = 1;
const FLAG_ZERO = 1;

/** A parsed record header. */
export interface OverlayRecord {
  /** First byte of the disk the record covers. */
  offset: number;
  /** Bytes covered. */
  length: number;
  /** True for a zero record (no payload). */
  zero: boolean;
  /** The record's CRC-32. */
  crc: number;
}

/**
 * Encodes a record header into a new 32-byte buffer, with the CRC over the header and `payload`.
 *
 * @param payload - The record's data; omit it for a zero record.
 */
export function encodeRecordHeader(offset: number, length: number, payload?: Uint8Array): Buffer {
  const header = Buffer.alloc(RECORD_HEADER_SIZE);
  header.writeUInt32LE(MAGIC, 0);
  header.writeUInt32LE(VERSION, 4);
  header.writeBigUInt64LE(BigInt(offset), 8);
  header.writeBigUInt64LE(BigInt(length), 16);
  header.writeUInt32LE(payload ? 0 : FLAG_ZERO, 24);
  let crc = crc32(header);
  if (payload) crc = crc32(payload, crc);
  header.writeUInt32LE(crc, 28);
  return header;
}

/**
 * Parses a record header, or returns `undefined` when it is not a valid header for a disk of
 * `diskSize` bytes (bad magic, version, flags, or a range outside the disk).
 */
export function parseRecordHeader(header: Uint8Array, diskSize: number): OverlayRecord | undefined {
  if (header.length < RECORD_HEADER_SIZE) return undefined;
  const buf = Buffer.from(header.buffer, header.byteOffset, RECORD_HEADER_SIZE);
  if (buf.readUInt32LE(0) !== MAGIC || buf.readUInt32LE(4) !== VERSION) return undefined;
  const flags = buf.readUInt32LE(24);
  if ((flags & ~FLAG_ZERO) !== 0) return undefined;
  const offset = buf.readBigUInt64LE(8);
  const length = buf.readBigUInt64LE(16);
  if (length === 0n || offset + length > BigInt(diskSize)) return undefined;
  return { offset: Number(offset), length: Number(length), zero: flags === FLAG_ZERO, crc: buf.readUInt32LE(28) };
}

/** The CRC-32 of a header with its CRC field zeroed (the start of a record's checksum). */
function headerCrc(header: Uint8Array): number {
  const copy = Buffer.from(header.subarray(0, RECORD_HEADER_SIZE));
  copy.writeUInt32LE(0, 28);
  return crc32(copy);
}

/**
 * Reads a file sequentially through one large buffer, handing out views of it.
 * A view stays valid until the next call to {@link SequentialReader.read}.
 */
export class SequentialReader {
  private readonly fh: FileHandle;
  private readonly buf: Buffer;
  private limit: number;
  private filePos: number;
  private start = 0;
  private end = 0;

  /**
   * @param from - File position of the first byte to read.
   * @param limit - File position to stop at.
   * @param bufferSize - Size of the internal buffer: the largest single read. @default 4 MiB
   */
  constructor(fh: FileHandle, from: number, limit: number, bufferSize = 4 * IO_CHUNK) {
    this.fh = fh;
    this.filePos = from;
    this.limit = limit;
    this.buf = Buffer.allocUnsafeSlow(bufferSize);
  }

  /** File position of the next byte {@link SequentialReader.read} returns. */
  get position(): number {
    return this.filePos - (this.end - this.start);
  }

  /** Largest `n` {@link SequentialReader.read} accepts. */
  get capacity(): number {
    return this.buf.length;
  }

  /** Returns the next `n` bytes (`n` ≤ capacity); fewer only at the limit or the end of the file. */
  async read(n: number): Promise<Buffer> {
    if (this.end - this.start < n) await this.fill(n);
    const take = Math.min(n, this.end - this.start);
    const view = this.buf.subarray(this.start, this.start + take);
    this.start += take;
    return view;
  }

  private async fill(n: number): Promise<void> {
    if (this.start > 0) {
      this.buf.copyWithin(0, this.start, this.end);
      this.end -= this.start;
      this.start = 0;
    }
    while (this.end < n && this.filePos < this.limit) {
      const want = Math.min(this.buf.length - this.end, this.limit - this.filePos);
      const { bytesRead } = await this.fh.read(this.buf, this.end, want, this.filePos);
      if (bytesRead === 0) {
        this.limit = this.filePos;
        break;
      }
      this.end += bytesRead;
      this.filePos += bytesRead;
    }
  }
}

/** Options of {@link walkRecords}. */
export interface WalkOptions {
  /** File position where records start. @default 0 */
  start?: number;
  /** File position where they end (the file's size, or a length known to be valid). */
  end: number;
  /** Size of the disk the records apply to. */
  diskSize: number;
  /** Collect the ranges the valid records cover (merged when contiguous, in file order). */
  collectRanges?: boolean;
  /**
   * Write every record into this image as it is read (later records win; zero records make their
   * range read as zero). In this mode the records must all be valid: the walk throws on the first
   * bad one instead of stopping.
   */
  applyTo?: FileHandle;
  /** What is walked, for error messages. */
  what: string;
  /** Checked between records. */
  signal?: AbortSignal;
  /** Called after each applied record (fault injection in tests). */
  afterRecord?: () => void | Promise<void>;
}

/** What {@link walkRecords} found. */
export interface WalkResult {
  /** File position just past the last valid record: anything after it is a torn tail. */
  validEnd: number;
  /** Number of valid records. */
  records: number;
  /** Ranges covered (when `collectRanges`). */
  ranges: Extent[];
}

/**
 * Reads the records of an overlay or undo file in order, verifying each one's header and CRC,
 * optionally applying them to a disk image. Stops at the first invalid record (a torn tail), or
 * throws a {@link @replikit/core!FormatError} there when applying.
 */
export async function walkRecords(fh: FileHandle, options: WalkOptions): Promise<WalkResult> {
  const { end, diskSize, applyTo, what } = options;
  const reader = new SequentialReader(fh, options.start ?? 0, end);
  const ranges: Extent[] = [];
  const scratch = applyTo ? Buffer.allocUnsafeSlow(IO_CHUNK) : undefined;
  let records = 0;
  let validEnd = options.start ?? 0;
  const torn = (why: string): WalkResult => {
    if (applyTo) {
      throw new FormatError(`${what}: record at byte ${validEnd} is damaged (${why}); the file cannot be applied`, {
        details: { position: validEnd },
      });
    }
    return { validEnd, records, ranges };
  };
  while (validEnd < end) {
    throwIfAborted(options.signal);
    const header = await reader.read(RECORD_HEADER_SIZE);
    if (header.length < RECORD_HEADER_SIZE) return torn('incomplete header');
    const record = parseRecordHeader(header, diskSize);
    if (!record) return torn('bad header');
    let crc = headerCrc(header);
    if (!record.zero) {
      if (reader.position + record.length > end) return torn('incomplete payload');
      for (let done = 0; done < record.length; ) {
        const piece = await reader.read(Math.min(record.length - done, reader.capacity));
        if (piece.length === 0) return torn('incomplete payload');
        crc = crc32(piece, crc);
        if (applyTo) await writeFully(applyTo, piece, record.offset + done);
        done += piece.length;
      }
    } else if (applyTo) {
      await zeroRange(applyTo, record.offset, record.length, scratch!);
    }
    if (crc !== record.crc) return torn('checksum mismatch');
    records++;
    validEnd = reader.position;
    if (options.collectRanges) addRange(ranges, record.offset, record.length);
    await options.afterRecord?.();
  }
  return { validEnd, records, ranges };
}

/** Appends `[offset, offset + length)` to `ranges`, merging it into the last range when they touch. */
export function addRange(ranges: Extent[], offset: number, length: number): void {
  const last = ranges.at(-1);
  if (last && offset <= last.offset + last.length && offset + length >= last.offset) {
    const start = Math.min(last.offset, offset);
    last.length = Math.max(last.offset + last.length, offset + length) - start;
    last.offset = start;
    return;
  }
  ranges.push({ offset, length });
}

/** Sorts ranges and merges the ones that overlap or touch. */
export function mergeRanges(ranges: Extent[]): Extent[] {
  const sorted = [...ranges].sort((a, b) => a.offset - b.offset);
  const merged: Extent[] = [];
  for (const r of sorted) addRange(merged, r.offset, r.length);
  return merged;
}
