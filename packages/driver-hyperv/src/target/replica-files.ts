import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { type ReplicaOwner, StateError } from '@replikit/core';
import type { TargetFiles } from './target-files.js';

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
export async function listPending(
  files: TargetFiles,
  dir: string,
): Promise<Array<PendingFile & { temporary: boolean }>> {
  const out: Array<PendingFile & { temporary: boolean }> = [];
  for (const name of await files.list(dir)) {
    const tmp = /^(.*)\.tmp-[0-9a-f-]+$/.exec(name);
    const m = PENDING.exec(tmp ? tmp[1]! : name);
    if (m) out.push({ index: Number(m[1]), key: m[2]!, path: join(dir, name), temporary: tmp !== null });
  }
  return out.sort((a, b) => a.path.localeCompare(b.path));
}

const MARK = 'replikit-mark';
const POINTS = 'replikit-points.json';
const OWNER = 'replikit-owner.json';
const BOOT = 'replikit-boot';

/** `ready` only when the folder says so: a missing or unreadable mark is in progress. */
export async function readMark(files: TargetFiles, dir: string): Promise<'in-progress' | 'ready'> {
  const text = (await files.readText(join(dir, MARK)).catch(() => '')) ?? '';
  return text.trim() === 'ready' ? 'ready' : 'in-progress';
}

/** Marks the replica folder. */
export async function writeMark(files: TargetFiles, dir: string, state: 'in-progress' | 'ready'): Promise<void> {
  await files.writeText(join(dir, MARK), `${state}\n`);
}

/** When replikit last started the replica (part of the fingerprint), or ''. */
export async function readBoot(files: TargetFiles, dir: string): Promise<string> {
  return ((await files.readText(join(dir, BOOT)).catch(() => '')) ?? '').trim();
}

/** Records a start of the replica made through replikit. */
export async function writeBoot(files: TargetFiles, dir: string): Promise<void> {
  await files.writeText(join(dir, BOOT), `${new Date().toISOString()}\n`);
}

/** The run holding the replica, from its hold file. */
export async function readOwner(files: TargetFiles, dir: string): Promise<ReplicaOwner | undefined> {
  const text = await files.readText(join(dir, OWNER));
  if (text === undefined) return undefined;
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
export async function claimOwner(files: TargetFiles, dir: string, owner: ReplicaOwner): Promise<ReplicaOwner> {
  const path = join(dir, OWNER);
  if (await files.createExclusive(path, JSON.stringify(owner))) return owner;
  const holder = await readOwner(files, dir);
  if (holder && holder.runId !== owner.runId) return holder;
  await files.writeText(path, JSON.stringify(owner)); // the same run re-takes its hold (a resume)
  return owner;
}

/** Ends the hold of `runId`; nothing when another run (or none) holds the replica. */
export async function releaseOwner(files: TargetFiles, dir: string, runId: string): Promise<void> {
  if ((await readOwner(files, dir))?.runId !== runId) return;
  await files.remove(join(dir, OWNER));
}

/** Identity and change stamp of a file for the fingerprint: size, inode, modification time. */
export function fileStamp(files: TargetFiles, path: string): Promise<string> {
  return files.stamp(path);
}

/** The ids of the checkpoints replikit made as restore points (a user's own are not points). */
export async function readPointIds(files: TargetFiles, dir: string): Promise<string[]> {
  const text = await files.readText(join(dir, POINTS));
  if (text === undefined) return [];
  try {
    const parsed = JSON.parse(text) as unknown;
    return Array.isArray(parsed) ? parsed.map(String) : [];
  } catch {
    throw new StateError(`the restore point list ${join(dir, POINTS)} is unreadable; delete it to list no point`);
  }
}

/** Records the restore points' checkpoint ids. */
export async function writePointIds(files: TargetFiles, dir: string, ids: readonly string[]): Promise<void> {
  await files.writeText(join(dir, POINTS), JSON.stringify(ids));
}
