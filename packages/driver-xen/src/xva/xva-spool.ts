import { lstat, mkdtemp, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';

/** The spool folders' name: `replikit-xva-<pid>-<random>`, so a later process can tell whose it is. */
const SPOOL_PREFIX = 'replikit-xva-';
const SPOOL_NAME = /^replikit-xva-(\d+)-[A-Za-z0-9]+$/;

/**
 * Creates this process's spool folder for one XVA import under `parent`, after removing the spool
 * folders there of processes that no longer run (a run killed while spooling leaves its export,
 * as large as the VM, in the temporary folder; the next import on this machine removes it).
 */
export async function makeSpoolDir(parent: string): Promise<string> {
  await removeStaleSpools(parent);
  return mkdtemp(join(parent, `${SPOOL_PREFIX}${process.pid}-`));
}

/**
 * Removes the spool folders under `parent` whose process is gone. Only real folders named by
 * {@link makeSpoolDir} and owned by this user are touched; a live process's folder is kept.
 * @returns the folders removed.
 */
export async function removeStaleSpools(parent: string): Promise<string[]> {
  const names = await readdir(parent).catch(() => [] as string[]);
  const removed: string[] = [];
  for (const name of names) {
    const pid = SPOOL_NAME.exec(name)?.[1];
    if (pid === undefined || isRunning(Number(pid))) continue;
    const path = join(parent, name);
    const st = await lstat(path).catch(() => undefined);
    if (!st?.isDirectory() || (process.getuid !== undefined && st.uid !== process.getuid())) continue;
    await rm(path, { recursive: true, force: true }).catch(() => undefined);
    removed.push(path);
  }
  return removed;
}

/** True when a process with this id runs (or exists under another user: not ours to judge). */
function isRunning(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}
