import type { Replica, RestorePoint, Snapshot } from '../contracts/hypervisor.js';
import type { JobSpec } from '../job/job-spec.js';
import type { WarningCode } from '../warnings.js';
import type { DiskFacts, PlanReason, ReplicaChange } from './plan/disk-plan.js';
import type { StageRecords } from './run-journal.js';
import type { RunOutcome, RunState } from './run-state.js';

/** How the blocks of one disk are chosen (DESIGN.md section 1, step 4). */
export type PlanMode = 'full' | 'tracked' | 'hash-diff';

/** Counters of a run or of one disk. All are absolute (totals so far), never deltas. */
export interface TransferStats {
  /** Blocks the plan covers (the disk's blocks, or the tracked ones). */
  blocksTotal: number;
  /** Blocks examined so far. */
  blocksScanned: number;
  /** Blocks sent with data. */
  blocksChanged: number;
  /** Blocks sent as zero operations (no payload). */
  blocksZero: number;
  /** Of the changed blocks, those sent as a compressed difference from the replica's block. */
  blocksDelta: number;
  /** Bytes read from the source. */
  bytesRead: number;
  /** Bytes read from the replica to compute its digests (verified diff). */
  bytesReadReplica: number;
  /** Bytes that crossed (or would cross) the wire: payload plus framing. */
  bytesSent: number;
  /** Bytes written to the replica. */
  bytesWritten: number;
  /** Bytes of the disks examined so far (the scan position, summed over disks). */
  bytesScanned: number;
  /** Bytes the plan covers in all. */
  bytesTotal: number;
}

/** The journaled plan and progress of one disk. */
export interface DiskRecord {
  /** Position of the disk in the VM. */
  position: number;
  /** Source disk id. */
  sourceDiskId: string;
  /** Replica disk id. */
  replicaDiskId: string;
  /** Virtual size in bytes. */
  size: number;
  /** How its blocks are chosen. */
  mode: PlanMode;
  /**
   * Where the replica's digests come from in a `hash-diff`: the target reads the replica
   * (`replica`, a verified diff) or a trusted replication cache (`cache`, the replica is not read).
   * A `tracked` disk with `cache` compares its changed blocks with the cache and carries the
   * cache's digests of the other blocks into the new one.
   */
  digestSource?: 'replica' | 'cache';
  /** True when the run writes a new replication cache for this disk. */
  writesCache?: boolean;
  /** Why the disk is replicated this way (absent in journals of older versions). */
  reason?: PlanReason;
  /** The facts the plan was made from (absent in journals of older versions). */
  facts?: DiskFacts;
  /** True when the replica disk is known to read as zero (newly created): holes need no zero operations. */
  targetKnownZero: boolean;
  /** Every block below this index is durable on the replica. */
  checkpointBlock: number;
  /** True when the disk's transfer finished. */
  done: boolean;
  /** The disk's counters. */
  stats: TransferStats;
}

/** What a run's journal and its flat record share: identity, job, state, times, totals. */
export interface RunHeader {
  /** The run's id: `<job>-<UTC time>-<random>`. */
  runId: string;
  /** The job, with defaults applied. */
  job: JobSpec;
  /** The current state. */
  state: RunState;
  /** Set once the run has decided how it ends (in `cleanup` and the terminal states). */
  outcome?: RunOutcome;
  /** The error that failed the run. */
  error?: { code: string; message: string };
  /**
   * The error that stopped the cleanup of a run that had already failed (its own error stays in
   * `error`); the run waits in `cleanup` for a `resume`. Cleared once a cleanup succeeds.
   */
  cleanupError?: { code: string; message: string };
  /** ISO times. */
  startedAt: string;
  updatedAt: string;
  finishedAt?: string;
  /** Process id of the process driving the run. */
  pid: number;
  /** Host name of the machine driving the run (absent in records of older versions). */
  host?: string;
  /**
   * Set while the run is parked: it was stopped at a checkpoint (SIGTERM, a maintenance window's
   * edge) and left unfinished on purpose, to be resumed from its journal. Cleared when it resumes.
   */
  stopped?: { reason: string; at: string };
  /** Every state entered, with its time. */
  history: Array<{ state: RunState; at: string }>;
  /** True when the user asked for a full run (`replikit run --full`): every disk is planned `FORCED`. */
  forced?: boolean;
  /** Block size in bytes. */
  blockSize: number;
  /** Digest algorithm. */
  digest: string;
  /** Per-disk plan and progress. */
  disks: DiskRecord[];
  /** Totals over all disks. */
  stats: TransferStats;
  /** Warnings raised during the run, each with a stable {@link WarningCode}. */
  warnings: Array<{ code: WarningCode; message: string }>;
}

/**
 * One run as a flat record: what the engine returns, `replikit runs --json` prints, and version 1
 * stores journaled. The store now keeps a run journal (each stage's part apart,
 * `RunJournal`); `toRunRecord` gives this record of it, with the stage parts again under `stages`.
 */
export interface RunRecord extends RunHeader {
  /** Format version of this flat record. */
  version: 1;
  /** Snapshot taken by this run. */
  snapshot?: Snapshot;
  /** The previous run's snapshot, kept as base until this run commits. */
  baseSnapshot?: Snapshot;
  /** The replica. */
  replica?: Replica;
  /** True when this run created the replica. */
  replicaCreated?: boolean;
  /** The restore point to roll back to (`null`: the replica has none yet). */
  restorePointBefore?: RestorePoint | null;
  /** The restore point this run committed. */
  restorePoint?: RestorePoint;
  /** True once the run may have written the replica (from the end of `plan` on). */
  replicaTouched?: boolean;
  /** The replica's fingerprint when the run planned (what a trusted cache must match). */
  replicaFingerprintAtPlan?: string;
  /** True when the replica changed outside replikit since the last run. */
  replicaModified?: boolean;
  /** How the replica changed, when `replicaModified`. */
  replicaChange?: ReplicaChange;
  /** The single-pass backup version this run records (`options.singlePass`). */
  backup?: { baseVersion?: string; version?: string };
  /** Set when this run was rolled back. */
  rolledBack?: boolean;
  /** Set when this run was abandoned (`replikit resume <id> --abandon`): ended without a rollback. */
  abandoned?: boolean;
  /** Each stage's part of the run's journal (absent in records of older versions). */
  stages?: StageRecords;
}

/** What the store keeps about a job between runs. */
export interface JobRecord {
  /** The job's name. */
  name: string;
  /** The method of its runs (rule `method-locked`). */
  method: string;
  /** The last run started. */
  lastRunId?: string;
  /** The last run that completed. */
  lastCompletedRunId?: string;
  /** The snapshot the last completed run left as base for the next. */
  baseSnapshot?: Snapshot;
  /** The replica. */
  replica?: Replica;
  /** The replica's fingerprint right after the last commit. */
  replicaFingerprint?: string;
  /** What that fingerprint was built from (the driver's details), to tell how the replica changed. */
  replicaFingerprintDetails?: Record<string, unknown>;
  /** The backup version the last single-pass run recorded (the replica's content). */
  lastBackupVersion?: string;
  /**
   * Set while the job's replica is failed over (`failed-over`, `committed`) or the job is retired by
   * a permanent failover (`retired`): the engine refuses to run the job (`E_FAILED_OVER`).
   */
  lifecycle?: 'failed-over' | 'committed' | 'retired';
  /** ISO time of the last change. */
  updatedAt: string;
}

/** Fresh zeroed counters. */
export function emptyStats(): TransferStats {
  return {
    blocksTotal: 0,
    blocksScanned: 0,
    blocksChanged: 0,
    blocksZero: 0,
    blocksDelta: 0,
    bytesRead: 0,
    bytesReadReplica: 0,
    bytesSent: 0,
    bytesWritten: 0,
    bytesScanned: 0,
    bytesTotal: 0,
  };
}

/** Sums counters. */
export function addStats(into: TransferStats, from: TransferStats): TransferStats {
  for (const key of Object.keys(into) as Array<keyof TransferStats>) into[key] += from[key];
  return into;
}

/** Sums the disks' counters into the run's. */
export function sumStats(run: { disks: readonly DiskRecord[]; stats: TransferStats }): void {
  const total = emptyStats();
  for (const disk of run.disks) addStats(total, disk.stats);
  run.stats = total;
}
