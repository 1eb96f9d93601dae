import { randomBytes } from 'node:crypto';
import { open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { toStorageError } from '../errors.js';

/** Fsyncs a directory so that a rename or a new entry in it survives a power loss. */
export async function fsyncDirectory(dir: string): Promise<void> {
  let handle: Awaited<ReturnType<typeof open>> | undefined;
  try {
    handle = await open(dir, 'r');
    await handle.sync();
  } catch (error) {
    // Some file systems do not allow fsync on a directory; the rename is still atomic there.
    if ((error as NodeJS.ErrnoException).code !== 'EISDIR' && (error as NodeJS.ErrnoException).code !== 'EINVAL') {
      throw toStorageError(error, `syncing folder ${dir}`);
    }
  } finally {
    await handle?.close();
  }
}

/**
 * Replaces `path` with `data` atomically: the data goes to a temporary file in the same folder,
 * is fsynced, and is renamed over `path`; then the folder is fsynced. A crash at any instant leaves
 * either the old file or the new one, never a mix.
 *
 * @throws {@link StorageError} (`E_NO_SPACE`, `E_IO`) naming the file.
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const dir = dirname(path);
  const temp = join(dir, `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    const handle = await open(temp, 'wx', 0o644);
    try {
      await handle.writeFile(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, path);
  } catch (error) {
    await rm(temp, { force: true }).catch(() => undefined);
    throw toStorageError(error, `writing ${path}`);
  }
  await fsyncDirectory(dir);
}
