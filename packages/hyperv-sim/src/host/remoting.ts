import { randomUUID } from 'node:crypto';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** A simulated host another machine's fake `pwsh` reaches through `New-PSSession -ComputerName`. */
export interface RemoteHostEntry {
  /** The simulated host's folder. */
  readonly root: string;
  /** The user remoting must sign in as; unset: any caller, with or without a credential. */
  readonly user?: string;
  /** The password that user must give (stored in clear: this is a simulator's test fixture). */
  readonly password?: string;
}

function registryFile(root: string): string {
  return join(root, 'remote-hosts.json');
}

function bootFile(root: string): string {
  return join(root, 'boot-id');
}

async function writeAtomic(path: string, text: string): Promise<void> {
  const tmp = `${path}.${randomUUID()}.tmp`;
  await writeFile(tmp, text);
  await rename(tmp, path);
}

/** The computer names a controller folder's fake `pwsh` can open sessions to (lower case → host). */
export async function readRemoteHosts(root: string): Promise<Record<string, RemoteHostEntry>> {
  try {
    return JSON.parse(await readFile(registryFile(root), 'utf8')) as Record<string, RemoteHostEntry>;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw error;
  }
}

/** Names simulated host `entry.root` as `computerName` for the fake `pwsh` of controller folder `root`. */
export async function addRemoteHost(root: string, computerName: string, entry: RemoteHostEntry): Promise<void> {
  const all = await readRemoteHosts(root);
  all[computerName.toLowerCase()] = entry;
  await writeAtomic(registryFile(root), JSON.stringify(all));
}

/** The host's boot id: sessions opened before the last {@link rebootHost} are broken. */
export async function bootId(root: string): Promise<string> {
  try {
    return (await readFile(bootFile(root), 'utf8')).trim();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return 'first-boot';
    throw error;
  }
}

/** Simulates a reboot of the host: every open PSSession to it becomes `Broken`. */
export async function rebootHost(root: string): Promise<void> {
  await writeAtomic(bootFile(root), randomUUID());
}
