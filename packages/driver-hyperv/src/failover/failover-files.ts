import { randomUUID } from 'node:crypto';
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FailedOverError, StateError } from '@replikit/core';

/**
 * A replica's failover state as kept in its folder (`replikit-failover.json`): `promoting` from
 * the moment a promotion passed its checks (`restored` once the disks were returned to the point),
 * `promoted` once started, `committed` for good. No file: an ordinary replica.
 */
export interface StoredFailover {
  state: 'promoting' | 'promoted' | 'committed';
  pointId: string;
  restored?: boolean;
}

const FAILOVER = 'replikit-failover.json';

/** The failover state in replica folder `dir`, or undefined for an ordinary replica. */
async function readLocal(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

export async function readFailover(
  dir: string,
  read: (path: string) => Promise<string | undefined> = readLocal,
): Promise<StoredFailover | undefined> {
  const text = await read(join(dir, FAILOVER));
  if (text === undefined) return undefined;
  try {
    const parsed = JSON.parse(text) as StoredFailover;
    if (typeof parsed.pointId === 'string' && ['promoting', 'promoted', 'committed'].includes(parsed.state)) {
      return parsed;
    }
  } catch {
    // reported below
  }
  throw new StateError(
    `the failover state ${join(dir, FAILOVER)} is unreadable; check the replica VM by hand before deleting the file`,
  );
}

/** Records the failover state (atomically), or drops it (`undefined`: an ordinary replica again). */
export async function writeFailover(dir: string, value: StoredFailover | undefined): Promise<void> {
  const path = join(dir, FAILOVER);
  if (!value) {
    await rm(path, { force: true });
    return;
  }
  const tmp = `${path}.${randomUUID()}.tmp`;
  await writeFile(tmp, JSON.stringify(value));
  await rename(tmp, path);
}

/** Refuses a run's claim or writer on a replica that is failed over or being promoted. */
export function assertNotFailedOver(f: StoredFailover | undefined, replicaId: string): void {
  if (!f) return;
  throw new FailedOverError(
    `replica '${replicaId}' is failed over (${f.state} at restore point ${f.pointId}); no run writes it until 'replikit failover undo' returns it to replicating`,
    { details: { state: f.state, pointId: f.pointId } },
  );
}

/** What a retired replica's notes hold: it became a production VM by a permanent failover. */
export interface RetiredRecord {
  replikitRetired: {
    name: string;
    of: string;
    pointId: string;
    retiredAt: string;
    /** The former replica's folder (its disks stay; replikit's own files go). */
    dir?: string;
  };
}

/** The retired record in a VM's notes, or undefined. */
export function retiredOf(notes: unknown): RetiredRecord['replikitRetired'] | undefined {
  if (typeof notes !== 'string' || !notes.startsWith('{')) return undefined;
  try {
    const parsed = JSON.parse(notes) as Partial<RetiredRecord>;
    const r = parsed.replikitRetired;
    return r && typeof r.name === 'string' ? r : undefined;
  } catch {
    return undefined;
  }
}

/** True when a VM's notes say it was replica `name` (of any source: the name is what a job writes into). */
export function retiredAs(notes: unknown, name: string): boolean {
  return retiredOf(notes)?.name === name;
}

/** What a test-failover clone's notes hold (set last, once the clone is complete). */
export interface CloneRecord {
  replikitClone: {
    replicaId: string;
    pointId: string;
    operationId: string;
    createdAt: string;
    /** The clone's folder (its disks). */
    dir: string;
    /** The networks it is connected to. */
    networks: string[];
  };
}

/** The clone record in a VM's notes, or undefined when the VM is no (complete) clone. */
export function cloneOf(notes: unknown): CloneRecord['replikitClone'] | undefined {
  if (typeof notes !== 'string' || !notes.startsWith('{')) return undefined;
  try {
    const parsed = JSON.parse(notes) as Partial<CloneRecord>;
    const r = parsed.replikitClone;
    return r && typeof r.replicaId === 'string' && typeof r.dir === 'string' ? r : undefined;
  } catch {
    return undefined;
  }
}
