import { randomUUID } from 'node:crypto';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** One guest write the change tracking saw. */
export interface ChangeRecord {
  /** The disk's tracking sequence number after the write. */
  seq: number;
  offset: number;
  length: number;
}

/** A disk's change tracking: an id fixed for the disk, a sequence, and the writes. */
export interface DiskTracking {
  /** Stays the same for the disk's life; part of every RCT id of the disk. */
  trackingId: string;
  seq: number;
  /** Writes newer than the oldest live reference point (older ones are dropped). */
  changes: ChangeRecord[];
  /** The oldest sequence a query may still start from (older ids are gone). */
  floor: number;
}

/** A reference point: one RCT id per disk, saved when a recovery checkpoint is converted. */
export interface ReferencePoint {
  instanceId: string;
  vmName: string;
  /** `rctX:<trackingId>:<seq>` per disk, in drive order. */
  rctIds: string[];
  /** The disks' identifying (base) paths, in drive order. */
  disks: string[];
}

/** All change tracking of a host, saved as `rct.json`. */
export interface RctState {
  /** Keyed by the disk's base VHDX path. */
  disks: Record<string, DiskTracking>;
  referencePoints: ReferencePoint[];
}

function file(root: string): string {
  return join(root, 'rct.json');
}

/** Reads a host's change tracking. */
export async function loadRct(root: string): Promise<RctState> {
  try {
    return JSON.parse(await readFile(file(root), 'utf8')) as RctState;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { disks: {}, referencePoints: [] };
    throw error;
  }
}

/** Saves a host's change tracking atomically. */
export async function saveRct(root: string, state: RctState): Promise<void> {
  const tmp = `${file(root)}.${randomUUID()}.tmp`;
  await writeFile(tmp, `${JSON.stringify(state)}\n`);
  await rename(tmp, file(root));
}

/** The tracking of the disk whose base file is `base` (created, at sequence 0, if new). */
export function tracking(state: RctState, base: string): DiskTracking {
  state.disks[base] ??= { trackingId: randomUUID(), seq: 0, changes: [], floor: 0 };
  return state.disks[base];
}

/** The disk's current RCT id. */
export function currentRctId(t: DiskTracking): string {
  return `rctX:${t.trackingId}:${String(t.seq).padStart(8, '0')}`;
}

/** The sequence an RCT id names on this disk, or `undefined` when it is not this disk's or is gone. */
export function rctSeq(t: DiskTracking, id: unknown): number | undefined {
  const m = typeof id === 'string' ? /^rctX:([0-9a-f-]+):(\d+)$/.exec(id) : null;
  if (!m || m[1] !== t.trackingId) return undefined;
  const seq = Number(m[2]);
  return seq < t.floor || seq > t.seq ? undefined : seq;
}
