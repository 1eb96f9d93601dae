import type { PlanMode } from '../run-record.js';
import type { PlanReason } from './disk-plan.js';

/** What the next run would do with one disk, as `replikit plan` tells it. */
export interface DiskForecast {
  /** Source disk id. */
  id: string;
  /** Virtual size in bytes. */
  size: number;
  mode: PlanMode;
  /** Where compared blocks' replica digests would come from. */
  digestSource?: 'replica' | 'cache';
  reason: PlanReason;
  /** Blocks the run would read from the source and examine (a scan examines every block). */
  blocksToRead: number;
  /** Bytes of those blocks (a scan: at most the disk's size; holes are not read). */
  bytesToRead: number;
  /** Blocks expected to be sent with data: changed on the source. */
  blocksChanged: number;
  /** Bytes expected on the wire for them. */
  bytesToSend: number;
  /**
   * `exact`: the blocks come from the source driver's record of pending changes (its dirty
   * bitmap), and equal what the run would read; `estimate`: from the job's past runs (or the disk's
   * size when there are none). Bytes sent are always an estimate: deltas and equal blocks shrink them.
   */
  basis: 'exact' | 'estimate';
}

/** Something that would stop the run. */
export interface RunBlocker {
  /** `RUN_UNFINISHED`, `REPLICA_HELD`, `REPLICA_RUNNING` or `RULE_BROKEN`. */
  code: 'RUN_UNFINISHED' | 'REPLICA_HELD' | 'REPLICA_RUNNING' | 'RULE_BROKEN';
  message: string;
}

/** What the next run of a job would do: `replikit plan` and {@link ReplicationEngine.plan}. */
export interface RunForecast {
  /** The job's name. */
  job: string;
  /** True when nothing would stop the run. */
  canRun: boolean;
  blockers: RunBlocker[];
  /** Warnings the run would raise (rules of warning severity). */
  warnings: Array<{ code: string; message: string }>;
  disks: DiskForecast[];
  /** Totals over the disks. */
  bytesToRead: number;
  bytesToSend: number;
  /**
   * Seconds the transfer would take at the read throughput the job's past runs measured
   * (absent when no past run measured one).
   */
  etaSeconds?: number;
  /** Bytes per second the ETA is based on, and how many past runs measured it. */
  throughput?: { bytesPerSecond: number; runs: number };
  /** Restore points the run would create, and the ids of those retention would then delete. */
  restorePoints: { create: number; prune: string[] };
}
