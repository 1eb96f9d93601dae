import { randomBytes } from 'node:crypto';
import { rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { toStorageError } from '@replikit/core';
import { fsyncDir } from './atomic-write.js';

/** Removals running in the background, by the path being removed. */
const pending = new Map<string, Promise<void>>();

/** Prefix of the entries of a `snapshots/` folder that are being removed. */
export const DISCARD_PREFIX = '.deleting-';

/**
 * Moves `path` (a file or a folder inside the VM's `snapshots` folder, or one of its snapshot
 * folders) to `snapshots/.deleting-<tag>-<hex>` with a durable rename, then removes it in the
 * background: unlinking a large image costs the file system up to a second (it frees every extent),
 * which need not be waited for. A crash leaves the `.deleting-` entry, which the next snapshot
 * removes. {@link settleDiscards} waits for the removals of this process.
 */
export async function discard(snapshots: string, path: string, tag: string): Promise<void> {
  const target = join(snapshots, `${DISCARD_PREFIX}${tag}-${randomBytes(4).toString('hex')}`);
  try {
    await rename(path, target);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw toStorageError(error, `moving ${path} out of the way`);
  }
  await fsyncDir(snapshots);
  removeInBackground(target);
}

/** Who takes background removals instead of this process, when someone does: {@link handOffRemovals}. */
let receiver: ((path: string) => void) | undefined;

/**
 * Hands every later background removal to `take` instead of starting it in this process; `undefined`
 * goes back to removing in this process. For a one-shot program: a process waits for its removals
 * before it exits, and unlinking a fragmented image can take seconds (the file system frees, and on
 * a file system mounted with `discard` trims, every extent). The program collects the paths and gives
 * them to a detached process as it ends (the CLI does). What is never removed stays a `.deleting-`
 * entry, which the next snapshot of the VM removes. Removals already started are not affected.
 */
export function handOffRemovals(take: ((path: string) => void) | undefined): void {
  receiver = take;
}

/** Starts removing `path` (recursively) in the background, once; or hands it off ({@link handOffRemovals}). */
export function removeInBackground(path: string): void {
  if (receiver) {
    receiver(path);
    return;
  }
  if (pending.has(path)) return;
  const removal = rm(path, { recursive: true, force: true })
    .catch(() => undefined) // left for the next sweep
    .finally(() => pending.delete(path));
  pending.set(path, removal);
}

/** True while this process removes `path` in the background. */
export function isBeingDiscarded(path: string): boolean {
  return pending.has(path);
}

/** Waits until every background removal of this process has ended. */
export async function settleDiscards(): Promise<void> {
  while (pending.size > 0) await Promise.all(pending.values());
}
