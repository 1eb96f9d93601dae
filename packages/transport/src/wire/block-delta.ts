import { deflateRawSync, inflateRawSync } from 'node:zlib';
import { TransportError } from '@replikit/core';

/**
 * The bytes of a delta on the wire: how a block differs from the block the replica holds.
 *
 * Byte 0 is the format: `1` for plain records, `2` for the same records compressed with raw
 * deflate. The records follow, back to back to the end; each is `gap` (LEB128: unchanged bytes
 * since the previous record's end), `length` (LEB128, > 0) and the `length` new bytes of that
 * range. Unchanged bytes cost nothing, and the target writes the records as they are, without
 * reading the replica.
 *
 * Blocks are compared with native `memcmp` calls, 4 KiB pages first and then 64-byte chunks inside
 * a changed page, so a record covers whole changed chunks: no loop over single bytes in JavaScript
 * (which runs slowly until the JIT has seen thousands of blocks). Deflate is tried only on large
 * record bodies: each zlib call costs ~0.1–0.2 ms of set-up, more than it saves on a few KiB.
 *
 * @module
 */

/** Format byte: records as they are. */
const FORMAT_RECORDS = 1;
/** Format byte: records, raw-deflated. */
const FORMAT_DEFLATED = 2;
/** Blocks are compared a page at a time first. */
const PAGE = 4096;
/** Inside a changed page, chunks of this size are compared: the unit of a record. */
const CHUNK = 64;
/** Record bodies at least this large are tried with deflate. */
const DEFLATE_FROM = 16 * 1024;
const ZERO_PAGE = Buffer.alloc(PAGE);

/** A delta as it arrives on the target side: the block it rebuilds, its bytes and the new block's digest. */
export interface EncodedDelta {
  /** Block index. */
  index: number;
  /** The delta's bytes, in the format above. */
  delta: Uint8Array;
  /** The digest of the new block, checked after applying when given. */
  digest?: Uint8Array;
}

/** One changed range of a block, as decoded from a delta. */
export interface DeltaRecord {
  /** Offset inside the block. */
  offset: number;
  /** The new bytes of the range (a view into the delta). */
  data: Uint8Array;
}

/**
 * Encodes how `block` differs from `base` (same length). Returns `undefined` when the encoding
 * would exceed `limit` bytes (the caller sends the whole block instead).
 *
 * @param base - The block the replica holds; `undefined` means all zeros.
 */
export function encodeBlockDelta(
  block: Uint8Array,
  base: Uint8Array | undefined,
  limit: number,
): Uint8Array | undefined {
  const length = block.length;
  if (base && base.length !== length) throw new RangeError('encodeBlockDelta: the blocks differ in length');
  const mine = Buffer.from(block.buffer, block.byteOffset, length);
  const theirs = base ? Buffer.from(base.buffer, base.byteOffset, length) : undefined;
  /** True when `[at, end)` of the block is unchanged. */
  const same = (at: number, end: number): boolean =>
    theirs ? mine.compare(theirs, at, end, at, end) === 0 : mine.compare(ZERO_PAGE, 0, end - at, at, end) === 0;

  // The changed ranges, chunk-aligned, adjacent ones merged.
  const ranges: Array<{ start: number; end: number }> = [];
  let bytes = 0;
  for (let page = 0; page < length; page += PAGE) {
    const pageEnd = Math.min(page + PAGE, length);
    if (same(page, pageEnd)) continue;
    for (let chunk = page; chunk < pageEnd; chunk += CHUNK) {
      const chunkEnd = Math.min(chunk + CHUNK, pageEnd);
      if (same(chunk, chunkEnd)) continue;
      const last = ranges.at(-1);
      if (last && last.end === chunk) last.end = chunkEnd;
      else ranges.push({ start: chunk, end: chunkEnd });
      bytes += chunkEnd - chunk;
    }
  }

  const out = Buffer.allocUnsafe(1 + bytes + ranges.length * 10);
  out[0] = FORMAT_RECORDS;
  let at = 1;
  let end = 0;
  for (const range of ranges) {
    at = writeVarint(out, at, range.start - end);
    at = writeVarint(out, at, range.end - range.start);
    at += mine.copy(out, at, range.start, range.end);
    end = range.end;
  }
  const plain = out.subarray(0, at);
  if (bytes >= DEFLATE_FROM) {
    const packed = deflateRawSync(plain.subarray(1), { level: 1 });
    if (packed.length + 1 < at * 0.75) {
      const result = new Uint8Array(packed.length + 1);
      result[0] = FORMAT_DEFLATED;
      result.set(packed, 1);
      return result.length <= limit ? result : undefined;
    }
  }
  return at <= limit ? plain : undefined;
}

/**
 * Decodes a delta for a block of `length` bytes into its records, in block order. Every field is
 * bounds-checked: a delta that is malformed, runs past the block or inflates past its bound throws
 * a {@link TransportError}.
 */
export function decodeBlockDelta(delta: Uint8Array, length: number, index: number): DeltaRecord[] {
  const fail = (why: string): never => {
    throw new TransportError(`the delta of block ${index} is malformed: ${why}`, { details: { index } });
  };
  if (delta.length === 0) fail('it is empty');
  let body: Uint8Array;
  if (delta[0] === FORMAT_RECORDS) body = delta.subarray(1);
  else if (delta[0] === FORMAT_DEFLATED) {
    // A valid body holds at most `length` data bytes and one 10-byte header per record of at least one byte.
    const bound = length * 11 + 1;
    try {
      body = inflateRawSync(delta.subarray(1), { maxOutputLength: bound });
    } catch (error) {
      return fail(`it does not inflate (${(error as Error).message})`);
    }
  } else return fail(`unknown format ${delta[0]}`);
  const records: DeltaRecord[] = [];
  let at = 0;
  let end = 0;
  while (at < body.length) {
    const gap = readVarint(body, at) ?? fail('a truncated gap');
    at = gap.next;
    const size = readVarint(body, at) ?? fail('a truncated length');
    at = size.next;
    const offset = end + gap.value;
    if (size.value === 0) fail('an empty record');
    if (offset + size.value > length) fail(`a record runs past the block's ${length} bytes`);
    if (at + size.value > body.length) fail('a record runs past the delta');
    records.push({ offset, data: body.subarray(at, at + size.value) });
    at += size.value;
    end = offset + size.value;
  }
  return records;
}

function writeVarint(out: Uint8Array, at: number, value: number): number {
  let v = value;
  while (v >= 0x80) {
    out[at++] = (v & 0x7f) | 0x80;
    v = Math.floor(v / 128);
  }
  out[at++] = v;
  return at;
}

/** Reads an unsigned LEB128 of at most 5 bytes (values below 2^35); `undefined` when truncated or too long. */
function readVarint(body: Uint8Array, at: number): { value: number; next: number } | undefined {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < 5; i++) {
    if (at + i >= body.length) return undefined;
    const byte = body[at + i]!;
    value += (byte & 0x7f) * scale;
    if ((byte & 0x80) === 0) return { value, next: at + i + 1 };
    scale *= 128;
  }
  return undefined;
}
