import { constants, type Stats } from 'node:fs';
import { type FileHandle, lstat, open } from 'node:fs/promises';
import { isAbsolute, join, relative, sep } from 'node:path';
import { FormatError, toStorageError } from '@replikit/core';

/** Options of {@link openDataFile}. */
export interface DataFileOptions {
  /** What the file is, for messages (`disk 'd0' of VM 'web'`). */
  what: string;
  /** Permissions of a file created with `O_CREAT`. @default 0o644 */
  mode?: number;
}

/**
 * Opens a file of a VM folder (a disk image, a snapshot copy, an overlay, an undo file, vm.json)
 * with `flags` plus `O_NOFOLLOW` and `O_NONBLOCK`, then checks on the open descriptor that it is a
 * regular file: a symbolic link (which could lead outside the VM folder), a FIFO, a device or a
 * folder is refused, so data is never read from or written to a file the folder does not hold.
 * Opening never blocks (a FIFO without a writer is refused, not waited for).
 *
 * @throws {@link @replikit/core!FormatError} naming the file when it is a link or not a regular file;
 * the Node.js error (`ENOENT`…) when it cannot be opened, for the caller to classify.
 */
export async function openDataFile(path: string, flags: number, options: DataFileOptions): Promise<FileHandle> {
  let handle: FileHandle;
  try {
    handle = await open(path, flags | constants.O_NOFOLLOW | constants.O_NONBLOCK, options.mode ?? 0o644);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ELOOP') throw linkError(path, options.what, error);
    throw error; // the caller's own handling (ENOENT…) and its toStorageError apply
  }
  try {
    const stats = await handle.stat();
    if (!stats.isFile()) {
      throw new FormatError(
        `${options.what}: ${path} is not a regular file; replace it with the file itself (the file driver keeps plain files in the VM folder)`,
        { details: { path } },
      );
    }
    return handle;
  } catch (error) {
    await handle.close().catch(() => undefined);
    throw toStorageError(error, `opening ${options.what} (${path})`);
  }
}

/** Reads the whole of a VM folder's file through {@link openDataFile} (no link followed). */
export async function readDataFile(path: string, what: string): Promise<Buffer> {
  const handle = await openDataFile(path, READ, { what });
  try {
    return await handle.readFile();
  } finally {
    await handle.close().catch(() => undefined);
  }
}

/**
 * Checks that every folder from `folder` (excluded) down to `inner` (included) is a real folder,
 * not a symbolic link: files opened under `inner` then lie inside `folder`. A missing folder
 * passes (opening a file in it reports it).
 *
 * @throws {@link @replikit/core!FormatError} naming the link, or when `inner` is not under `folder`.
 */
export async function assertRealFolders(folder: string, inner: string, what: string): Promise<void> {
  const rel = relative(folder, inner);
  if (rel === '') return;
  if (rel.startsWith('..') || isAbsolute(rel)) {
    throw new FormatError(`${what}: ${inner} is not inside ${folder}`, { details: { path: inner, folder } });
  }
  let at = folder;
  for (const part of rel.split(sep)) {
    at = join(at, part);
    let stats: Stats;
    try {
      stats = await lstat(at);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw toStorageError(error, `checking ${at}`);
    }
    if (stats.isSymbolicLink()) throw linkError(at, what);
    if (!stats.isDirectory()) {
      throw new FormatError(`${what}: ${at} is not a folder; remove it`, { details: { path: at } });
    }
  }
}

/** The error for a VM folder entry that is a symbolic link. */
export function linkError(path: string, what: string, cause?: unknown): FormatError {
  return new FormatError(
    `${what}: ${path} is a symbolic link, which the file driver never follows (it could lead outside the VM folder); put the file itself in its place`,
    { cause, details: { path } },
  );
}

/** The flags of Node's `'r'`, `'r+'` and `'w'` modes, for {@link openDataFile}. */
export function flagsOf(mode: 'r' | 'r+' | 'w'): number {
  return mode === 'r' ? READ : mode === 'r+' ? READ_WRITE : CREATE;
}

/** `O_RDONLY`, for {@link openDataFile}. */
export const READ = constants.O_RDONLY;
/** `O_RDWR`, for {@link openDataFile}. */
export const READ_WRITE = constants.O_RDWR;
/** `O_WRONLY | O_CREAT | O_TRUNC`: a new (or emptied) file, for {@link openDataFile}. */
export const CREATE = constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC;
