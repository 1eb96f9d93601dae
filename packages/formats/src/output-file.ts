import { randomBytes } from 'node:crypto';
import { type FileHandle, open, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { InputError, NotFoundError, toStorageError } from '@replikit/core';
import type { ImageReader } from './image.js';

/** Device and inode of a file: what makes two paths (links included) the same file. */
interface FileIdentity {
  dev: number;
  ino: number;
}

async function identityOf(path: string): Promise<(FileIdentity & { regular: boolean }) | undefined> {
  try {
    const s = await stat(path);
    return { dev: s.dev, ino: s.ino, regular: s.isFile() };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw toStorageError(error, `looking at ${path}`);
  }
}

/** An input file and its parents: an {@link ImageReader}, or any file named by `info.path`. */
export interface InputChain {
  info: { path: string };
  parent?: InputChain | undefined;
}

/**
 * Refuses an `output` that is the file `reader` reads (or one of its parents): the same path, a
 * symbolic link to it or a hard link, told apart by device and inode. Also refuses an output that
 * exists and is not a regular file (a folder, a device, a FIFO): it would be replaced, not written.
 *
 * @throws {@link @replikit/core!InputError} naming both files.
 */
export async function refuseSameFile(reader: InputChain, output: string): Promise<void> {
  const target = await identityOf(output);
  if (!target) return;
  for (let image: InputChain | undefined = reader; image; image = image.parent) {
    const source = await identityOf(image.info.path);
    if (source && source.dev === target.dev && source.ino === target.ino) {
      const what = image === reader ? 'the input' : `the input's parent image ${image.info.path}`;
      throw new InputError(
        `${output} is the same file as ${what} (same device and inode); converting into it would destroy it: choose another output file`,
        { details: { input: reader.info.path, output, file: image.info.path } },
      );
    }
  }
  if (!target.regular) {
    throw new InputError(`${output} exists and is not a regular file; choose a file name for the output image`, {
      details: { output },
    });
  }
}

/** A new, empty file beside `output` that becomes `output` through {@link PendingOutput.commit}. */
export interface PendingOutput {
  /** The temporary file to write. */
  readonly path: string;
  /** Renames the temporary file over `output` (fsyncing the folder when `sync`). */
  commit(sync: boolean): Promise<void>;
  /** Removes the temporary file (harmless after `commit`). */
  discard(): Promise<void>;
}

/**
 * Creates `.<name>.<random>.tmp` beside `output` (exclusively: never an existing file or link),
 * with the mode of an existing `output`, so an image is written in full before it replaces the
 * output with one rename, and a failure leaves an existing output untouched.
 */
export async function pendingOutput(output: string): Promise<PendingOutput> {
  // a long name is cut so the temporary one stays within NAME_MAX (255 bytes on most file systems)
  const path = join(dirname(output), `.${basename(output).slice(0, 160)}.${randomBytes(6).toString('hex')}.tmp`);
  let handle: FileHandle;
  try {
    const existing = await stat(output).catch(() => undefined);
    handle = await open(path, 'wx', 0o644);
    try {
      if (existing) await handle.chmod(existing.mode & 0o777);
    } finally {
      await handle.close();
    }
  } catch (error) {
    await rm(path, { force: true }).catch(() => undefined);
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new NotFoundError(`cannot write ${output}: its folder ${dirname(output)} does not exist`, {
        cause: error,
        details: { output },
      });
    }
    throw toStorageError(error, `creating a temporary file beside ${output}`);
  }
  let committed = false;
  return {
    path,
    async commit(sync) {
      try {
        await rename(path, output);
        committed = true;
        if (sync) await syncFolder(dirname(output));
      } catch (error) {
        throw toStorageError(error, `replacing ${output}`);
      }
    },
    async discard() {
      if (!committed) await rm(path, { force: true }).catch(() => undefined);
    },
  };
}

async function syncFolder(folder: string): Promise<void> {
  const handle = await open(folder, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
