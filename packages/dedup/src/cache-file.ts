import { createHash } from 'node:crypto';
import { type FileHandle, open } from 'node:fs/promises';
import { FormatError, toStorageError } from '@replikit/core';

/** Magic bytes of a replication cache file. */
export const CACHE_MAGIC = 'RKCACHE\0';
/** Format version written and read. */
export const CACHE_VERSION = 1;
/** Header length in bytes. */
export const CACHE_HEADER_BYTES = 64;
/** Trailer length: the sha256 of header and entries. */
export const CACHE_TRAILER_BYTES = 32;

/** The header of a replication cache file. */
export interface CacheHeader {
  version: number;
  digestId: number;
  digestLength: number;
  blockSize: number;
  blockCount: number;
  /** sha256 of the replica fingerprint it was written for. */
  fingerprintHash: Uint8Array;
}

/** sha256 of a fingerprint string, as the header keeps it. */
export function hashFingerprint(fingerprint: string): Uint8Array {
  return createHash('sha256').update(fingerprint).digest();
}

/** Encodes a header (64 bytes, little-endian). */
export function encodeHeader(header: CacheHeader): Uint8Array {
  const bytes = new Uint8Array(CACHE_HEADER_BYTES);
  const view = new DataView(bytes.buffer);
  bytes.set(new TextEncoder().encode(CACHE_MAGIC), 0);
  view.setUint32(8, header.version, true);
  view.setUint8(12, header.digestId);
  view.setUint8(13, header.digestLength);
  view.setUint32(16, header.blockSize, true);
  view.setBigUint64(20, BigInt(header.blockCount), true);
  bytes.set(header.fingerprintHash, 28);
  return bytes;
}

/**
 * Decodes and checks a header read from `path`.
 * @throws {@link @replikit/core!FormatError} naming what is wrong.
 */
export function decodeHeader(bytes: Uint8Array, path: string): CacheHeader {
  if (bytes.length < CACHE_HEADER_BYTES) throw new FormatError(`${path}: truncated header`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, CACHE_HEADER_BYTES);
  const magic = new TextDecoder().decode(bytes.subarray(0, 8));
  if (magic !== CACHE_MAGIC) throw new FormatError(`${path}: not a replikit cache file (bad magic)`);
  const version = view.getUint32(8, true);
  if (version !== CACHE_VERSION) throw new FormatError(`${path}: cache format version ${version} is not supported`);
  const blockCount = view.getBigUint64(20, true);
  if (blockCount > BigInt(Number.MAX_SAFE_INTEGER)) throw new FormatError(`${path}: block count out of range`);
  const header: CacheHeader = {
    version,
    digestId: view.getUint8(12),
    digestLength: view.getUint8(13),
    blockSize: view.getUint32(16, true),
    blockCount: Number(blockCount),
    fingerprintHash: bytes.slice(28, 60),
  };
  if (header.digestLength < 8 || header.digestLength > 64) throw new FormatError(`${path}: bad digest length`);
  return header;
}

/**
 * Streams a file's `[0, length)` through sha256 in 1 MiB reads (bounded memory) and returns the
 * digest.
 */
export async function hashFileRange(handle: FileHandle, length: number, path: string): Promise<Uint8Array> {
  const hash = createHash('sha256');
  const buffer = Buffer.allocUnsafe(1024 * 1024);
  try {
    for (let at = 0; at < length; ) {
      const { bytesRead } = await handle.read(buffer, 0, Math.min(buffer.length, length - at), at);
      if (bytesRead === 0) throw new FormatError(`${path}: truncated`);
      hash.update(buffer.subarray(0, bytesRead));
      at += bytesRead;
    }
  } catch (error) {
    throw toStorageError(error, `reading ${path}`);
  }
  return hash.digest();
}

/** Opens a file (for reading unless `flags` say otherwise), or returns undefined when it does not exist. */
export async function openIfExists(path: string, flags = 'r'): Promise<FileHandle | undefined> {
  try {
    return await open(path, flags);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw toStorageError(error, `opening ${path}`);
  }
}
