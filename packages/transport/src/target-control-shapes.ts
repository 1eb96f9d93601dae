import type {
  DiskRef,
  PowerState,
  Replica,
  ReplicaFingerprint,
  ReplicaOwner,
  ReplicaSpec,
  RestorePoint,
  VMInfo,
} from '@replikit/core';
import { ProtocolError } from './protocol/protocol-error.js';

/*
 * Shape checks of the values target-control requests and responses carry (docs/protocol.md,
 * section 12). Both ends check what they receive before they use it: a field of the wrong type,
 * or a string or list beyond its bound, is a protocol error, never a value passed on to a driver
 * or to the engine. Unknown members are kept (drivers put their own data in `meta`).
 */

type Json = Record<string, unknown>;

/** Longest string member (ids, names, labels, messages). */
const MAX_STRING = 4096;
/** Most disks of a VM or replica, restore points of a list, networks of a VM. */
const MAX_ITEMS = 4096;

/** `value` as a JSON object, else a protocol error naming `what`. */
export function objectOf(value: unknown, what: string): Json {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ProtocolError(`${what} must be an object`);
  }
  return value as Json;
}

/** `value` as a string of at most 4096 characters. */
export function stringOf(value: unknown, what: string): string {
  if (typeof value !== 'string' || value.length > MAX_STRING) throw new ProtocolError(`${what} must be a string`);
  return value;
}

/** `value` as a whole number from `min` to `max`. */
export function integerOf(value: unknown, what: string, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    throw new ProtocolError(`${what} must be an integer from ${min} to ${max}`);
  }
  return value;
}

function optional<T>(body: Json, key: string, check: (value: unknown, what: string) => T, what: string) {
  return body[key] === undefined ? undefined : check(body[key], `${what}.${key}`);
}

function listOf<T>(value: unknown, what: string, item: (value: unknown, what: string) => T): T[] {
  if (!Array.isArray(value) || value.length > MAX_ITEMS) throw new ProtocolError(`${what} must be a list`);
  return value.map((entry, i) => item(entry, `${what}[${i}]`));
}

function metaOf(body: Json, what: string): void {
  if (body.meta !== undefined) objectOf(body.meta, `${what}.meta`);
}

/** A {@link DiskRef}. */
export function diskRefOf(value: unknown, what: string): DiskRef {
  const body = objectOf(value, what);
  stringOf(body.id, `${what}.id`);
  stringOf(body.vmId, `${what}.vmId`);
  integerOf(body.size, `${what}.size`);
  optional(body, 'label', stringOf, what);
  optional(body, 'snapshotId', stringOf, what);
  metaOf(body, what);
  return body as unknown as DiskRef;
}

/** A {@link Replica}. */
export function replicaOf(value: unknown, what = 'replica'): Replica {
  const body = objectOf(value, what);
  stringOf(body.id, `${what}.id`);
  stringOf(body.name, `${what}.name`);
  listOf(body.disks, `${what}.disks`, diskRefOf);
  if (typeof body.created !== 'boolean') throw new ProtocolError(`${what}.created must be a boolean`);
  metaOf(body, what);
  return body as unknown as Replica;
}

/** A {@link RestorePoint}. */
export function restorePointOf(value: unknown, what = 'point'): RestorePoint {
  const body = objectOf(value, what);
  for (const key of ['id', 'replicaId', 'label', 'createdAt']) stringOf(body[key], `${what}.${key}`);
  return body as unknown as RestorePoint;
}

/** A list of {@link RestorePoint}s. */
export function restorePointsOf(value: unknown, what = 'points'): RestorePoint[] {
  return listOf(value, what, restorePointOf);
}

/** A {@link ReplicaOwner}. */
export function ownerOf(value: unknown, what = 'owner'): ReplicaOwner {
  const body = objectOf(value, what);
  stringOf(body.runId, `${what}.runId`);
  stringOf(body.host, `${what}.host`);
  integerOf(body.pid, `${what}.pid`);
  stringOf(body.startedAt, `${what}.startedAt`);
  optional(body, 'stateDir', stringOf, what);
  return body as unknown as ReplicaOwner;
}

/** A {@link ReplicaFingerprint}. */
export function fingerprintOf(value: unknown, what = 'fingerprint'): ReplicaFingerprint {
  const body = objectOf(value, what);
  stringOf(body.value, `${what}.value`);
  if (body.details !== undefined) objectOf(body.details, `${what}.details`);
  return body as unknown as ReplicaFingerprint;
}

const POWER_STATES: ReadonlySet<string> = new Set(['running', 'stopped', 'paused', 'unknown']);

/** A {@link VMInfo}. */
export function vmInfoOf(value: unknown, what = 'vm'): VMInfo {
  const body = objectOf(value, what);
  stringOf(body.id, `${what}.id`);
  stringOf(body.name, `${what}.name`);
  integerOf(body.cpus, `${what}.cpus`);
  integerOf(body.memoryMiB, `${what}.memoryMiB`);
  if (!POWER_STATES.has(body.powerState as string)) throw new ProtocolError(`${what}.powerState is unknown`);
  listOf(body.disks, `${what}.disks`, diskRefOf);
  if (body.networks !== undefined) listOf(body.networks, `${what}.networks`, stringOf);
  return body as unknown as VMInfo & { powerState: PowerState };
}

/** A {@link ReplicaSpec}. */
export function replicaSpecOf(value: unknown, what = 'spec'): ReplicaSpec {
  const body = objectOf(value, what);
  stringOf(body.name, `${what}.name`);
  vmInfoOf(body.source, `${what}.source`);
  listOf(body.disks, `${what}.disks`, (entry, at) => {
    const disk = objectOf(entry, at);
    stringOf(disk.sourceDiskId, `${at}.sourceDiskId`);
    integerOf(disk.size, `${at}.size`);
    optional(disk, 'label', stringOf, at);
    return disk;
  });
  if (body.placement !== undefined) objectOf(body.placement, `${what}.placement`);
  return body as unknown as ReplicaSpec;
}

/** `in-progress` or `ready`. */
export function markOf(value: unknown, what = 'state'): 'in-progress' | 'ready' {
  if (value !== 'in-progress' && value !== 'ready') throw new ProtocolError(`${what} must be in-progress or ready`);
  return value;
}
