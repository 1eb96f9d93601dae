import { createHash, randomUUID } from 'node:crypto';
import { readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type ReplicaOwner, StateError } from '@replikit/core';

/** The replikit identity a replica VM carries in its notes (JSON), so it is found again. */
export interface ReplicaIdentity {
  /** Always 1: the notes are replikit's. */
  replikit: 1;
  /** The replica's name (the job's). */
  replica: string;
  /** The source VM's id. */
  of: string;
  /** The folder holding the replica's disks, marks and hold. */
  dir: string;
}

/** The identity in a VM's notes, or undefined when they are not a replica's. */
export function identityOf(notes: unknown): ReplicaIdentity | undefined {
  if (typeof notes !== 'string' || !notes.startsWith('{')) return undefined;
  try {
    const parsed = JSON.parse(notes) as Partial<ReplicaIdentity>;
    if (parsed.replikit !== 1 || typeof parsed.replica !== 'string' || typeof parsed.of !== 'string') return undefined;
    if (typeof parsed.dir !== 'string') return undefined;
    return parsed as ReplicaIdentity;
  } catch {
    return undefined;
  }
}

/** The folder name of a replica: a digest of its name and source, so no user text becomes a path. */
export function replicaFolderName(name: string, sourceId: string): string {
  return `replikit-${createHash('sha256').update(`${name}\0${sourceId}`).digest('hex').slice(0, 20)}`;
}

/** The base VHDX of replica disk `index`, as first created. */
export function baseDiskName(index: number): string {
  return `disk-${index}.vhdx`;
}

/** A run's key in file names (a digest: run ids never become paths). */
export function runKey(runId: string | undefined): string {
  return createHash('sha256')
    .update(runId ?? '')
    .digest('hex')
    .slice(0, 16);
}

/** The pending file of run `key` for disk `index`: the run's writes, invisible until committed. */
export function pendingName(index: number, key: string): string {
  return `replikit-pending-${index}-${key}.vhdx`;
}

const PENDING = /^replikit-pending-(\d+)-([0-9a-f]{16})\.vhdx$/;

/** A pending file found in a replica folder. */
export interface PendingFile {
  index: number;
  key: string;
  path: string;
}

/** The pending files of a replica folder (also a writer's temporary files, flagged `temporary`). */
export async function listPending(dir: string): Promise<Array<PendingFile & { temporary: boolean }>> {
  const out: Array<PendingFile & { temporary: boolean }> = [];
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const tmp = /^(.*)\.tmp-[0-9a-f-]+$/.exec(name);
    const m = PENDING.exec(tmp ? tmp[1]! : name);
    if (m) out.push({ index: Number(m[1]), key: m[2]!, path: join(dir, name), temporary: tmp !== null });
  }
  return out.sort((a, b) => a.path.localeCompare(b.path));
}

/** Writes `text` to `path` atomically (temporary file, then rename). */
async function writeAtomic(path: string, text: string): Promise<void> {
  const tmp = `${path}.${randomUUID()}.tmp`;
  await writeFile(tmp, text);
  await rename(tmp, path);
}

const MARK = 'replikit-mark';
const POINTS = 'replikit-points.json';
const OWNER = 'replikit-owner.json';
const BOOT = 'replikit-boot';

/** `ready` only when the folder says so: a missing or unreadable mark is in progress. */
export async function readMark(dir: string): Promise<'in-progress' | 'ready'> {
  const text = await readFile(join(dir, MARK), 'utf8').catch(() => '');
  return text.trim() === 'ready' ? 'ready' : 'in-progress';
}

/** Marks the replica folder. */
export async function writeMark(dir: string, state: 'in-progress' | 'ready'): Promise<void> {
  await writeAtomic(join(dir, MARK), `${state}\n`);
}

/** When replikit last started the replica (part of the fingerprint), or ''. */
export async function readBoot(dir: string): Promise<string> {
  return (await readFile(join(dir, BOOT), 'utf8').catch(() => '')).trim();
}

/** Records a start of the replica made through replikit. */
export async function writeBoot(dir: string): Promise<void> {
  await writeAtomic(join(dir, BOOT), `${new Date().toISOString()}\n`);
}

/** The run holding the replica, from its hold file. */
export async function readOwner(dir: string): Promise<ReplicaOwner | undefined> {
  let text: string;
  try {
    text = await readFile(join(dir, OWNER), 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  try {
    return JSON.parse(text) as ReplicaOwner;
  } catch {
    throw new StateError(
      `the hold file ${join(dir, OWNER)} is unreadable; delete it when no run is writing the replica`,
    );
  }
}

/**
 * Takes the hold: the hold file is created exclusively (`wx`), which makes the claim atomic
 * between processes of this host. Resolves with the holder after the call.
 */
export async function claimOwner(dir: string, owner: ReplicaOwner): Promise<ReplicaOwner> {
  const path = join(dir, OWNER);
  try {
    await writeFile(path, JSON.stringify(owner), { flag: 'wx' });
    return owner;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
  const holder = await readOwner(dir);
  if (holder && holder.runId !== owner.runId) return holder;
  await writeAtomic(path, JSON.stringify(owner)); // the same run re-takes its hold (a resume)
  return owner;
}

/** Ends the hold of `runId`; nothing when another run (or none) holds the replica. */
export async function releaseOwner(dir: string, runId: string): Promise<void> {
  if ((await readOwner(dir))?.runId !== runId) return;
  await rm(join(dir, OWNER), { force: true });
}

/** Identity and change stamp of a file for the fingerprint: size, inode, modification time. */
export async function fileStamp(path: string): Promise<string> {
  try {
    const s = await stat(path, { bigint: true });
    return `${s.size}:${s.dev}:${s.ino}:${s.mtimeNs}`;
  } catch {
    return 'missing';
  }
}

/** The ids of the checkpoints replikit made as restore points (a user's own are not points). */
export async function readPointIds(dir: string): Promise<string[]> {
  try {
    const parsed = JSON.parse(await readFile(join(dir, POINTS), 'utf8')) as unknown;
    return Array.isArray(parsed) ? parsed.map(String) : [];
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new StateError(`the restore point list ${join(dir, POINTS)} is unreadable; delete it to list no point`);
  }
}

/** Records the restore points' checkpoint ids. */
export async function writePointIds(dir: string, ids: readonly string[]): Promise<void> {
  await writeAtomic(join(dir, POINTS), JSON.stringify(ids));
}
