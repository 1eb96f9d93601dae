import { randomBytes } from 'node:crypto';
import { open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { toStorageError } from '@replikit/core';

/**
 * Replaces `path` with `data` atomically: writes a temporary file next to it, fsyncs it, renames
 * it over `path` and fsyncs the folder. A crash at any instant leaves either the old file or the
 * new one, never a half-written file. Storage errors (ENOSPC…) become `toStorageError` errors that
 * name the file; the temporary file is removed.
 *
 * @param path - The file to replace (created when missing).
 * @param data - The new content.
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  let fh: Awaited<ReturnType<typeof open>> | undefined;
  try {
    fh = await open(tmp, 'wx', 0o644);
    await fh.writeFile(data);
    await fh.sync();
    await fh.close();
    fh = undefined;
    await rename(tmp, path);
    await fsyncDir(dir);
  } catch (error) {
    await fh?.close().catch(() => undefined);
    await rm(tmp, { force: true }).catch(() => undefined);
    throw toStorageError(error, `writing ${path}`);
  }
}

/** Writes `value` as pretty JSON with {@link writeFileAtomic}. */
export async function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  await writeFileAtomic(path, `${JSON.stringify(value, null, 2)}\n`);
}

/**
 * Fsyncs a folder so that the creation, rename or removal of its entries survives a crash of the
 * host.
 */
export async function fsyncDir(dir: string): Promise<void> {
  let fh: Awaited<ReturnType<typeof open>> | undefined;
  try {
    fh = await open(dir, 'r');
    await fh.sync();
  } catch (error) {
    throw toStorageError(error, `syncing folder ${dir}`);
  } finally {
    await fh?.close();
  }
}
