import { open, readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';

/** Whether process `pid` of this machine is alive. */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Takes the host's lock file once; false when another caller holds it. */
async function tryLock(path: string, owner: string): Promise<boolean> {
  try {
    const file = await open(path, 'wx');
    await file.writeFile(owner);
    await file.close();
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
  // A holder killed with its lock held (a killed worker's fake pwsh) leaves it behind: take it over.
  const holder = Number((await readFile(path, 'utf8').catch(() => '')).split(' ')[0]);
  if (Number.isSafeInteger(holder) && holder > 0 && !alive(holder)) await unlink(path).catch(() => undefined);
  return false;
}

/**
 * Runs `fn` holding the host's lock (`<root>/host.lock`, across processes): every change of the
 * host's state (read `host.json`, change it, write it back; a guest write with its change log) is
 * made by one caller at a time, as one Hyper-V service would serialise them. A lock left by a dead
 * process is taken over.
 */
export async function withHostLock<T>(root: string, fn: () => Promise<T>): Promise<T> {
  const path = join(root, 'host.lock');
  const owner = `${process.pid} ${Math.random().toString(36).slice(2)}`;
  for (let wait = 2; !(await tryLock(path, owner)); wait = Math.min(wait * 2, 50)) await delay(wait);
  try {
    return await fn();
  } finally {
    await unlink(path).catch(() => undefined);
  }
}
