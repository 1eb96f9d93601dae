import { crc32, deflateRawSync, inflateRawSync } from 'node:zlib';
import { FormatError } from '@replikit/core';
import { worthCompressing } from '@replikit/core/internal';

/** Largest block a chunk may hold (the largest replication block). */
export const MAX_CHUNK_BYTES = 16 * 1024 * 1024;

const RAW = 0;
const DEFLATE = 1;
const HEADER = 9;

/**
 * Encodes a block for the store: a 9-byte header (codec, plain length, CRC-32 of the payload) and
 * the payload, deflated (level 1) unless that saves less than 1/16 of the block, then stored raw.
 * A block whose sample looks random (core's `worthCompressing`) is stored raw without trying:
 * deflate runs at 60–80 MB/s on such data. The CRC catches any flipped bit of the stored payload,
 * even one that would still decode.
 */
export function encodeChunk(plain: Uint8Array): Uint8Array {
  const [header, payload] = encodeChunkParts(plain);
  const out = new Uint8Array(header.length + payload.length);
  out.set(header, 0);
  out.set(payload, header.length);
  return out;
}

/**
 * The chunk {@link encodeChunk} makes, as its two parts: the 9-byte header and the payload. A raw
 * payload is `plain` itself (not a copy), so a writer can write both parts without copying the block.
 */
export function encodeChunkParts(plain: Uint8Array): [header: Uint8Array, payload: Uint8Array] {
  // One output chunk larger than any output worth keeping: no second pass, no concatenation (2x faster).
  const packed = worthCompressing(plain)
    ? deflateRawSync(plain, { level: 1, chunkSize: Math.max(64, plain.length + 64) })
    : undefined;
  const useDeflate = packed !== undefined && packed.length < plain.length - (plain.length >> 4);
  const payload = useDeflate ? packed : plain;
  const header = new Uint8Array(HEADER);
  header[0] = useDeflate ? DEFLATE : RAW;
  const view = new DataView(header.buffer);
  view.setUint32(1, plain.length, true);
  view.setUint32(5, crc32(payload), true);
  return [header, payload];
}

/**
 * Decodes a chunk, checking every field: the codec is known, the plain length is in bounds, the
 * payload matches its CRC-32 (skipped with `intact`, when the caller has just checked a checksum
 * over these very bytes, as a pack record's is) and decodes to exactly that length (never more:
 * inflation is capped).
 *
 * @throws {@link @replikit/core!FormatError} naming `what` otherwise.
 */
export function decodeChunk(bytes: Uint8Array, what: string, intact = false): Uint8Array {
  if (bytes.length < HEADER) throw new FormatError(`${what}: truncated chunk (${bytes.length} bytes)`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const codec = view.getUint8(0);
  const length = view.getUint32(1, true);
  if (length > MAX_CHUNK_BYTES) throw new FormatError(`${what}: chunk claims ${length} bytes, more than the limit`);
  const payload = bytes.subarray(HEADER);
  if (!intact && crc32(payload) !== view.getUint32(5, true))
    throw new FormatError(`${what}: damaged (checksum mismatch)`);
  if (codec === RAW) {
    if (payload.length !== length)
      throw new FormatError(`${what}: raw chunk holds ${payload.length} of ${length} bytes`);
    return payload;
  }
  if (codec !== DEFLATE) throw new FormatError(`${what}: unknown chunk codec ${codec}`);
  let plain: Buffer;
  try {
    // One output chunk a byte larger than the block: zlib fills it in one pass and returns it as it
    // is (a chunk the exact size, or the 16 KiB default, costs a second pass or a concatenation:
    // 2.5-6x slower on 64 KiB blocks). The byte over is caught by the length check below.
    const room = Math.max(64, length + 1);
    plain = inflateRawSync(payload, { maxOutputLength: room, chunkSize: room });
  } catch (error) {
    throw new FormatError(`${what}: chunk does not inflate (${(error as Error).message})`, { cause: error });
  }
  if (plain.length !== length) throw new FormatError(`${what}: chunk inflates to ${plain.length} of ${length} bytes`);
  return plain;
}
