import type { DiskRef, Replica, ReplicaSpec, RestorePoint, Snapshot, TargetFence } from '../contracts/index.js';
import { InputError } from '../errors.js';

/** Longest id, name or label the driver base accepts. */
export const MAX_ID_LENGTH = 1000;

function shown(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}…` : value);
  return value === null ? 'null' : typeof value;
}

/**
 * Checks that `value` is an id a driver may look up: a non-empty string of at most
 * {@link MAX_ID_LENGTH} characters without a NUL. A driver that turns ids into paths adds its own
 * rule by overriding `AbstractHypervisor._checkId`.
 *
 * @returns `value`, typed as a string.
 * @throws {@link InputError} naming `what` otherwise.
 */
export function assertId(value: unknown, what: string): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > MAX_ID_LENGTH || value.includes('\0')) {
    throw new InputError(
      `${what} must be a non-empty string of at most ${MAX_ID_LENGTH} characters, got ${shown(value)}`,
      {
        details: { what },
      },
    );
  }
  return value;
}

/**
 * Checks that `value` is a whole number of bytes ≥ 0.
 * @throws {@link InputError} naming `what` otherwise.
 */
export function assertSize(value: unknown, what: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new InputError(`${what} must be a whole number of bytes ≥ 0, got ${shown(value)}`, { details: { what } });
  }
  return value;
}

/**
 * Checks that `value` is one of `allowed`.
 * @throws {@link InputError} naming `what` and the allowed values otherwise.
 */
export function assertOneOf<T extends string>(value: unknown, allowed: readonly T[], what: string): T {
  if (!allowed.includes(value as T)) {
    throw new InputError(`${what} must be ${allowed.map((a) => `'${a}'`).join(' or ')}, got ${shown(value)}`);
  }
  return value as T;
}

function assertObject(value: unknown, what: string): asserts value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new InputError(`${what} must be an object, got ${shown(value)}`);
  }
}

/** Id checker the shape checks use: the base's {@link assertId} or a driver's stricter rule. */
export type IdCheck = (value: unknown, what: string) => string;

/**
 * Checks the shape of a {@link DiskRef}: string ids (`snapshotId` when present) and a size in bytes.
 * @throws {@link InputError} naming the first bad field.
 */
export function checkDiskRef(disk: unknown, checkId: IdCheck = assertId): DiskRef {
  assertObject(disk, 'a disk reference');
  checkId(disk.vmId, 'disk vmId');
  checkId(disk.id, 'disk id');
  if (disk.snapshotId !== undefined) checkId(disk.snapshotId, 'disk snapshotId');
  assertSize(disk.size, `size of disk '${String(disk.id)}'`);
  return disk as unknown as DiskRef;
}

/**
 * Checks the shape of a {@link Snapshot}: its id, VM id, label and disks.
 * @throws {@link InputError} naming the first bad field.
 */
export function checkSnapshot(snapshot: unknown, checkId: IdCheck = assertId): Snapshot {
  assertObject(snapshot, 'a snapshot');
  checkId(snapshot.id, 'snapshot id');
  checkId(snapshot.vmId, 'snapshot vmId');
  if (!Array.isArray(snapshot.disks)) throw new InputError(`snapshot '${String(snapshot.id)}': disks must be an array`);
  return snapshot as unknown as Snapshot;
}

/**
 * Checks the shape of a {@link Replica}: its id, name and disks.
 * @throws {@link InputError} naming the first bad field.
 */
export function checkReplica(replica: unknown, checkId: IdCheck = assertId): Replica {
  assertObject(replica, 'a replica');
  checkId(replica.id, 'replica id');
  if (!Array.isArray(replica.disks)) throw new InputError(`replica '${String(replica.id)}': disks must be an array`);
  return replica as unknown as Replica;
}

/**
 * Checks the shape of a {@link ReplicaSpec}: a name, a source VM with CPUs and memory, and disks
 * with distinct source disk ids and sizes in bytes.
 * @throws {@link InputError} naming the first bad field.
 */
export function checkReplicaSpec(spec: unknown, checkId: IdCheck = assertId): ReplicaSpec {
  assertObject(spec, 'a replica spec');
  checkId(spec.name, 'replica name');
  assertObject(spec.source, 'replica spec: source');
  if (!Array.isArray(spec.disks)) throw new InputError('replica spec: disks must be an array');
  const seen = new Set<string>();
  for (const [i, disk] of (spec.disks as unknown[]).entries()) {
    assertObject(disk, `replica spec: disks[${i}]`);
    const id = checkId(disk.sourceDiskId, `replica spec: disks[${i}].sourceDiskId`);
    if (seen.has(id)) throw new InputError(`replica spec: disk id '${id}' appears twice`);
    seen.add(id);
    assertSize(disk.size, `replica spec: disks[${i}].size`);
  }
  if (spec.placement !== undefined) assertObject(spec.placement, 'replica spec: placement');
  return spec as unknown as ReplicaSpec;
}

/**
 * Checks the shape of a {@link RestorePoint} and that it belongs to `replica`.
 * @throws {@link InputError} naming the bad field, or the replica the point belongs to.
 */
export function checkRestorePoint(point: unknown, replica: Replica, checkId: IdCheck = assertId): RestorePoint {
  assertObject(point, 'a restore point');
  checkId(point.id, 'restore point id');
  if (point.replicaId !== replica.id) {
    throw new InputError(
      `restore point '${String(point.id)}' belongs to replica '${String(point.replicaId)}', not '${replica.id}'`,
    );
  }
  return point as unknown as RestorePoint;
}

/**
 * Checks a restore point or snapshot label: a non-empty string of at most {@link MAX_ID_LENGTH} characters.
 * @throws {@link InputError} otherwise.
 */
export function checkLabel(label: unknown, what: string): string {
  if (typeof label !== 'string' || label.length === 0 || label.length > MAX_ID_LENGTH) {
    throw new InputError(
      `${what} must be a non-empty string of at most ${MAX_ID_LENGTH} characters, got ${shown(label)}`,
    );
  }
  return label;
}

/**
 * Checks an operation's fence, when there is one: an object whose `epoch` is a safe integer ≥ 1.
 * @throws {@link InputError} otherwise.
 */
export function checkFence(fence: unknown): TargetFence | undefined {
  if (fence === undefined) return undefined;
  const epoch = (fence as { epoch?: unknown } | null)?.epoch;
  if (typeof epoch !== 'number' || !Number.isSafeInteger(epoch) || epoch < 1) {
    throw new InputError(`a fence's epoch must be a whole number ≥ 1, got ${shown(epoch)}`);
  }
  return fence as TargetFence;
}
