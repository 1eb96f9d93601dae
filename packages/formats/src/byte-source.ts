import { constants, type Stats } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { FormatError, InputError, toStorageError } from '@replikit/core';

/**
 * Random access to the bytes of an image file (or of an in-memory image, for tests). Reads are
 * exact: a range that is not wholly inside the source throws a {@link FormatError} (the file is
 * truncated), so a parser can never read past the end.
 */
export interface ByteSource {
  /** The file's name, for messages. */
  readonly name: string;
  /** Its length in bytes. */
  readonly size: number;
  /** Fills `target` with the bytes at `offset`. */
  readInto(target: Uint8Array, offset: number, what: string): Promise<void>;
  /** Releases the source. */
  close(): Promise<void>;
}

/** Throws a {@link FormatError} unless `[offset, offset + length)` lies inside a source of `size` bytes. */
export function checkInside(source: ByteSource, offset: number, length: number, what: string): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
    throw new FormatError(`${source.name}: ${what}: invalid range ${offset}+${length}`, {
      details: { file: source.name, offset, length },
    });
  }
  if (offset + length > source.size) {
    throw new FormatError(
      `${source.name}: ${what} at byte ${offset} (${length} bytes) ends past the end of the file (${source.size} bytes): the file is truncated or corrupt`,
      { details: { file: source.name, offset, length, size: source.size } },
    );
  }
}

/** Reads `length` bytes at `offset` into a new array. */
export async function readBytes(source: ByteSource, offset: number, length: number, what: string): Promise<Uint8Array> {
  checkInside(source, offset, length, what);
  const target = new Uint8Array(length);
  await source.readInto(target, offset, what);
  return target;
}

class FileByteSource implements ByteSource {
  constructor(
    readonly name: string,
    readonly size: number,
    private readonly handle: FileHandle,
  ) {}
  async readInto(target: Uint8Array, offset: number, what: string): Promise<void> {
    checkInside(this, offset, target.length, what);
    let done = 0;
    try {
      while (done < target.length) {
        const { bytesRead } = await this.handle.read(target, done, target.length - done, offset + done);
        if (bytesRead === 0) break;
        done += bytesRead;
      }
    } catch (error) {
      throw toStorageError(error, `reading ${this.name}`);
    }
    if (done < target.length) {
      throw new FormatError(`${this.name}: ${what} at byte ${offset}: the file ended early (it shrank while open?)`);
    }
  }
  async close(): Promise<void> {
    await this.handle.close().catch(() => undefined);
  }
}

/**
 * Opens a file for reading as a {@link ByteSource}. Only a regular file or a block device is
 * accepted; the file is opened with `O_NONBLOCK` and checked before any read, so a FIFO, a socket
 * or a terminal is refused at once instead of blocking the process.
 *
 * @throws {@link @replikit/core!InputError} when `path` is not a regular file or a block device.
 */
export async function openFileSource(path: string): Promise<ByteSource> {
  let handle: FileHandle;
  try {
    handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (error) {
    throw toStorageError(error, `opening ${path}`);
  }
  try {
    const stat = await handle.stat();
    if (!stat.isFile() && !stat.isBlockDevice()) {
      throw new InputError(`${path} is ${kindOf(stat)}, not a disk image; give a regular file or a block device`, {
        details: { file: path },
      });
    }
    return new FileByteSource(path, stat.size, handle);
  } catch (error) {
    await handle.close().catch(() => undefined);
    throw toStorageError(error, `opening ${path}`);
  }
}

function kindOf(stat: Stats): string {
  if (stat.isFIFO()) return 'a FIFO';
  if (stat.isDirectory()) return 'a folder';
  if (stat.isSocket()) return 'a socket';
  if (stat.isCharacterDevice()) return 'a character device';
  return 'not a regular file';
}

/** An in-memory {@link ByteSource} (used by tests and by callers that already hold an image). */
export function memorySource(bytes: Uint8Array, name = 'memory'): ByteSource {
  return {
    name,
    size: bytes.length,
    async readInto(target, offset, what) {
      checkInside(this, offset, target.length, what);
      target.set(bytes.subarray(offset, offset + target.length));
    },
    async close() {},
  };
}

/** One MiB of zeroes, shared and never written. */
export const ZERO_MIB: Uint8Array = new Uint8Array(1 << 20);

/** True when every byte of `data` is zero (a memcmp against shared zeroes, not a JS loop). */
export function isZero(data: Uint8Array): boolean {
  const zero = Buffer.from(ZERO_MIB.buffer, 0, ZERO_MIB.byteLength);
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  for (let at = 0; at < buf.length; at += zero.length) {
    const end = Math.min(buf.length, at + zero.length);
    if (buf.compare(zero, 0, end - at, at, end) !== 0) return false;
  }
  return true;
}

/**
 * A new array of `length` bytes whose content is undefined (not zeroed): for reads that overwrite
 * every byte, saving the zero-fill of a fresh array. Never pooled, so it owns its ArrayBuffer.
 */
export function allocUninitialized(length: number): Uint8Array {
  return new Uint8Array(Buffer.allocUnsafeSlow(length).buffer, 0, length);
}
