import { readFile, readlink, rm, symlink, unlink } from 'node:fs/promises';
import { hostname } from 'node:os';
import { ConflictError, toStorageError } from '@replikit/core';
import { isProcessAlive } from '@replikit/core/internal';

/** A held lock; release it in a `finally`. */
export interface LockHandle {
  /** The lock file. */
  readonly path: string;
  /** Removes the lock file. Calling it twice is harmless. */
  release(): Promise<void>;
}

/** Lock files held by this process, by absolute path. */
const held = new Set<string>();

/**
 * Takes the lock file `path`, for exclusive use of something by this process.
 *
 * The lock is a symbolic link whose target records the owner (`pid:<pid>@<host>`): creating it is
 * atomic (it fails when the lock exists) and needs no data block, so locks still work on a full
 * file system, where recovering and reverting a replica must remain possible. A lock of this
 * process fails at once (in-process lock); a lock whose process is dead is stale and taken over; a
 * lock of a live process fails.
 *
 * @param what - What the lock protects, for the error message (`"disk 'd0' of replica 'web'"`).
 * @throws {@link @replikit/core!ConflictError} when the lock is held by this process or by another live process.
 */
export async function acquireLockFile(path: string, what: string): Promise<LockHandle> {
  if (held.has(path)) {
    throw new ConflictError(`${what} is in use by this process; wait for the other operation to finish or close it`, {
      details: { lock: path },
    });
  }
  held.add(path);
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        await symlink(`pid:${process.pid}@${hostname()}`, path);
        break;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
        const owner = await readOwner(path);
        if (owner !== undefined && owner !== process.pid && isAlive(owner)) {
          throw new ConflictError(
            `${what} is in use by process ${owner} (lock file ${path}); wait for it to finish, or remove the lock file if that process is not replikit`,
            { details: { lock: path, pid: owner } },
          );
        }
        if (attempt > 0) {
          throw new ConflictError(`${what}: another process took the stale lock ${path} at the same time; retry`, {
            details: { lock: path },
          });
        }
        // Stale: its process is gone (or it is our own pid from an earlier life). Take it over.
        await rm(path, { force: true });
      }
    }
  } catch (error) {
    held.delete(path);
    throw toStorageError(error, `taking the lock ${path}`);
  }
  let released = false;
  return {
    path,
    async release() {
      if (released) return;
      released = true;
      try {
        await unlink(path);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT')
          throw toStorageError(error, `removing the lock ${path}`);
      } finally {
        held.delete(path);
      }
    },
  };
}

async function readOwner(path: string): Promise<number | undefined> {
  let target: string;
  try {
    target = await readlink(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    if (code !== 'EINVAL') throw error;
    // Not a symbolic link: a lock file written by hand, holding JSON `{ "pid": … }` or a bare pid.
    const text = await readFile(path, 'utf8').catch(() => '');
    target = `pid:${/\d+/.exec(text)?.[0] ?? ''}`;
  }
  const pid = Number(/^pid:(\d+)/.exec(target)?.[1]);
  return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
}

/** True when a process with this pid exists (ours included). */
export const isAlive = isProcessAlive;

/**
 * Serialises async operations per key inside this process (a promise chain per key): used so that
 * two calls of one process never interleave their read-modify-write of the same vm.json.
 */
export class KeyedMutex {
  private readonly tails = new Map<string, Promise<unknown>>();

  /** Runs `fn` once every earlier `run` with the same key has settled. */
  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    const result = previous.then(fn, fn);
    const tail = result.then(
      () => undefined,
      () => undefined,
    );
    this.tails.set(key, tail);
    try {
      return await result;
    } finally {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }
}

/** The process-wide mutex of VM folders (shared by every driver instance of the process). */
export const folderMutex = new KeyedMutex();

/**
 * The process-wide mutex of snapshot chains, keyed by VM folder: snapshots, deletions (merges),
 * merge recovery and the opening of snapshot readers never interleave inside one process.
 */
export const snapshotMutex = new KeyedMutex();
