import type { FileHandle } from 'node:fs/promises';
import { toStorageError } from '@replikit/core';

/** Writes all of `data` at `offset`, looping over short writes. */
export async function writeAll(handle: FileHandle, data: Uint8Array, offset: number, path: string): Promise<void> {
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
export async function syncIf(enabled: boolean, handle: FileHandle, path: string): Promise<void> {
  if (!enabled) return;
  await handle.sync().catch((error) => {
    throw toStorageError(error, `flushing ${path}`);
  });
}
