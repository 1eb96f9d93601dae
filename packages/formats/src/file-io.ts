import { toStorageError } from '@replikit/core';

/**
 * The part of a file handle the image writers use: Node's `FileHandle` is one, and so is a file
 * written through an agent on another host.
 */
export interface RandomAccessFile {
  write(data: Uint8Array, offset: number, length: number, position: number): Promise<{ bytesWritten: number }>;
  read(buffer: Uint8Array, offset: number, length: number, position: number): Promise<{ bytesRead: number }>;
  truncate(length: number): Promise<void>;
  sync(): Promise<void>;
  close(): Promise<void>;
}

/** Writes all of `data` at `offset`, looping over short writes. */
export async function writeAll(
  handle: RandomAccessFile,
  data: Uint8Array,
  offset: number,
  path: string,
): Promise<void> {
  let done = 0;
  try {
    while (done < data.length) {
      const { bytesWritten } = await handle.write(data, done, data.length - done, offset + done);
      done += bytesWritten;
    }
  } catch (error) {
    throw toStorageError(error, `writing ${path}`);
  }
}

/** Fsyncs `handle` when `enabled` (writers made with `sync: false` skip it). */
export async function syncIf(enabled: boolean, handle: RandomAccessFile, path: string): Promise<void> {
  if (!enabled) return;
  await handle.sync().catch((error) => {
    throw toStorageError(error, `flushing ${path}`);
  });
}
