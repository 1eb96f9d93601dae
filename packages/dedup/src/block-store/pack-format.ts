import { crc32 } from 'node:zlib';
import { ADDRESS_BYTES } from './store-paths.js';

/** The 8 bytes every pack file starts with. */
export const PACK_MAGIC = Buffer.from('RKPACK01', 'latin1');
/** Bytes of a record header: magic, address, payload length, payload CRC-32, header CRC-32. */
export const RECORD_HEADER_BYTES = 4 + ADDRESS_BYTES + 4 + 4 + 4;
/** Bytes of an entry of a pack's index file: address, record offset (u64), payload length. */
export const INDEX_ENTRY_BYTES = ADDRESS_BYTES + 8 + 4;

const RECORD_MAGIC = 0x31434b52; // "RKC1" little-endian
/** The 4 bytes every record header starts with (`RKC1`). */
export const RECORD_MAGIC_BYTES = Buffer.from('RKC1', 'latin1');

/** Where a chunk lies: its pack, the offset of its record header, and its payload length. */
export interface ChunkLocation {
  pack: string;
  offset: number;
  length: number;
}

/** A record header for `payload` (an encoded chunk) addressed `address` (32 bytes). */
export function recordHeader(address: Uint8Array, payload: Uint8Array): Buffer {
  return recordHeaderOf(address, [payload]);
}

/** A record header for a payload given as consecutive parts (see {@link recordHeader}). */
export function recordHeaderOf(address: Uint8Array, parts: readonly Uint8Array[]): Buffer {
  let length = 0;
  let crc = 0;
  for (const part of parts) {
    length += part.length;
    crc = crc32(part, crc);
  }
  const header = Buffer.alloc(RECORD_HEADER_BYTES);
  header.writeUInt32LE(RECORD_MAGIC, 0);
  header.set(address, 4);
  header.writeUInt32LE(length, 4 + ADDRESS_BYTES);
  header.writeUInt32LE(crc, 8 + ADDRESS_BYTES);
  header.writeUInt32LE(crc32(header.subarray(0, 12 + ADDRESS_BYTES)), 12 + ADDRESS_BYTES);
  return header;
}

/** A parsed record header, or `undefined` when the bytes are not one (torn or foreign). */
export function parseRecordHeader(
  header: Uint8Array,
): { address: string; length: number; payloadCrc: number } | undefined {
  if (header.length < RECORD_HEADER_BYTES) return undefined;
  const view = Buffer.from(header.buffer, header.byteOffset, RECORD_HEADER_BYTES);
  if (view.readUInt32LE(0) !== RECORD_MAGIC) return undefined;
  if (crc32(view.subarray(0, 12 + ADDRESS_BYTES)) !== view.readUInt32LE(12 + ADDRESS_BYTES)) return undefined;
  return {
    address: view.subarray(4, 4 + ADDRESS_BYTES).toString('hex'),
    length: view.readUInt32LE(4 + ADDRESS_BYTES),
    payloadCrc: view.readUInt32LE(8 + ADDRESS_BYTES),
  };
}

/** Checks a record's payload against the CRC-32 its header holds. */
export function payloadIntact(payload: Uint8Array, payloadCrc: number): boolean {
  return crc32(payload) === payloadCrc;
}

/** An index-file entry for a record. */
export function indexEntry(address: Uint8Array, offset: number, length: number): Buffer {
  const entry = Buffer.alloc(INDEX_ENTRY_BYTES);
  entry.set(address, 0);
  entry.writeBigUInt64LE(BigInt(offset), ADDRESS_BYTES);
  entry.writeUInt32LE(length, ADDRESS_BYTES + 8);
  return entry;
}

/** Parses the whole entries of an index file (a torn last entry is ignored). */
export function parseIndex(bytes: Buffer): Array<{ address: string; offset: number; length: number }> {
  const entries: Array<{ address: string; offset: number; length: number }> = [];
  for (let at = 0; at + INDEX_ENTRY_BYTES <= bytes.length; at += INDEX_ENTRY_BYTES) {
    entries.push({
      address: bytes.subarray(at, at + ADDRESS_BYTES).toString('hex'),
      offset: Number(bytes.readBigUInt64LE(at + ADDRESS_BYTES)),
      length: bytes.readUInt32LE(at + ADDRESS_BYTES + 8),
    });
  }
  return entries;
}
