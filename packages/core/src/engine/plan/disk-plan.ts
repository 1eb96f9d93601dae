import type { PlanMode } from '../run-record.js';

/**
 * Why a disk's plan is what it is. The first three are the normal cases; the others say why a
 * run reads more than the last one did.
 *
 * - `TRACKED`: the change tracker vouches for the interval; only the tracked blocks are read.
 * - `INCREMENTAL`: every block is read and compared with a trusted replication cache (no tracker
 *   was asked for; the usual mode of a VM without change tracking is `TRACKING_UNAVAILABLE`).
 * - `FIRST_SEED`: the replica is new or has no restore point: every block is sent.
 * - `FORCED`: the user asked for a full run (`replikit run --full`).
 * - `METHOD_ALWAYS_FULL`: the job's method reads the whole VM every time (`xva`).
 * - `BASE_SNAPSHOT_MISSING`: the snapshot the last run left as base is gone from the job's record.
 * - `BACKUP_BASE_MISSING`: a single-pass run has no previous backup version to inherit from (none yet,
 *   deleted, or of another block size or other disks).
 * - `DISK_RESIZED`: the disk's size differs from its size in the base snapshot.
 * - `DISK_SET_CHANGED`: the disk is not in the base snapshot (added, or moved in the disk order).
 * - `REPLICA_MODIFIED`: the replica changed since the last run (booted, reverted to a restore point, or
 *   written outside replikit).
 * - `CACHE_MISSING`: the disk has no replication cache yet (or it was deleted).
 * - `CACHE_INVALID`: the replication cache exists but does not describe the replica.
 * - `PULL_IGNORES_CACHE`: a pull job asked for the replication cache, which a pull never uses: the
 *   target compares every block's digest with the source's.
 * - `PULL_HASH_DIFF`: a pull job: the target compares every block's digest with the source's (a
 *   change tracker cannot narrow a pull).
 * - `TRACKING_UNAVAILABLE`: the source driver has no change tracker.
 * - `TRACKING_RESET`: the tracker cannot vouch for the interval (outside writes, a lost bitmap, a
 *   CBT reset).
 */
export type PlanReasonCode =
  | 'TRACKED'
  | 'INCREMENTAL'
  | 'FIRST_SEED'
  | 'FORCED'
  | 'METHOD_ALWAYS_FULL'
  | 'BASE_SNAPSHOT_MISSING'
  | 'BACKUP_BASE_MISSING'
  | 'DISK_RESIZED'
  | 'DISK_SET_CHANGED'
  | 'REPLICA_MODIFIED'
  | 'CACHE_MISSING'
  | 'CACHE_INVALID'
  | 'PULL_IGNORES_CACHE'
  | 'PULL_HASH_DIFF'
  | 'TRACKING_UNAVAILABLE'
  | 'TRACKING_RESET';

/** Every reason code, in the order {@link planDisk} checks them. */
export const PLAN_REASON_CODES: readonly PlanReasonCode[] = [
  'FORCED',
  'METHOD_ALWAYS_FULL',
  'FIRST_SEED',
  'BASE_SNAPSHOT_MISSING',
  'DISK_SET_CHANGED',
  'DISK_RESIZED',
  'BACKUP_BASE_MISSING',
  'REPLICA_MODIFIED',
  'CACHE_MISSING',
  'CACHE_INVALID',
  'PULL_IGNORES_CACHE',
  'PULL_HASH_DIFF',
  'TRACKING_UNAVAILABLE',
  'TRACKING_RESET',
  'TRACKED',
  'INCREMENTAL',
];

/** The reason of a plan, with the facts that led to it. */
export interface PlanReason {
  /** Stable code. */
  code: PlanReasonCode;
  /** One line saying what happened, for tables and logs. */
  message: string;
  /** The facts behind the code (sizes, the cache's complaint, how the replica changed…). */
  evidence: Record<string, string | number | boolean>;
}

/**
 * How the replica changed since the last run, as far as the target can tell: it was `booted`, it
 * was `written` outside replikit without a boot, or it `changed` in a way the driver does not say.
 */
export type ReplicaChange = 'booted' | 'written' | 'changed';

/** Everything {@link planDisk} decides from: gathered before planning, never during the transfer. */
export interface DiskFacts {
  /** The user asked for a full run. */
  forced: boolean;
  /** The job's method always reads the whole VM (`xva`). */
  methodAlwaysFull: boolean;
  /** The job's method, for the evidence. */
  method: string;
  /** The replica was created by this run, or has no restore point: nothing to compare with. */
  firstSeed: boolean;
  /** The job's record has no base snapshot (while the replica has a restore point). */
  baseSnapshotMissing: boolean;
  /** The disk's size now, and in the base snapshot (`undefined`: not in it). */
  size: number;
  baseSize: number | undefined;
  /** A single-pass run without a previous backup version to inherit blocks from. */
  backupBaseMissing: boolean;
  /** How the replica changed since the last run, when it did. */
  replicaModified: ReplicaChange | undefined;
  /** `pull` jobs never use the replication cache. */
  direction: 'push' | 'pull';
  /**
   * The replication cache: not used by the job (`off`), `ok` (trusted), `missing` or `invalid`
   * (with the cache's own reason).
   */
  cache: { status: 'off' } | { status: 'ok' } | { status: 'missing' } | { status: 'invalid'; reason: string };
  /** The job asked for a replication cache (`options.replicationCache`), whether or not one is used. */
  cacheRequested: boolean;
  /**
   * The change tracker's answer: the driver has none (`unavailable`), cannot vouch for the
   * interval (`reset`), vouches (`ok`), or was not asked (`not-asked`: no base to ask about).
   */
  tracker: 'unavailable' | 'reset' | 'ok' | 'not-asked';
}

/** What one disk's run does, and why. The journaled plan is the plan that runs. */
export interface DiskPlan {
  /** How the blocks are chosen. */
  mode: PlanMode;
  /** Where a compared block's replica digest comes from (absent for `full`, and tracked without a cache). */
  digestSource?: 'replica' | 'cache';
  /** True when the run writes a new replication cache for the disk. */
  writesCache: boolean;
  /** Why. */
  reason: PlanReason;
}
