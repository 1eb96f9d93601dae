import type { WarningCode } from '../warnings.js';
import type { PlanReason } from './plan/disk-plan.js';
import type { PlanMode, TransferStats } from './run-record.js';
import type { RunState } from './run-state.js';

/** Emitted at every state transition of a run. */
export interface StateEvent {
  runId: string;
  job: string;
  from: RunState;
  to: RunState;
  /** ISO time. */
  at: string;
}

/** Progress of one disk inside a {@link ProgressEvent}. */
export interface DiskProgress {
  /** Source disk id. */
  id: string;
  mode: PlanMode;
  done: boolean;
  stats: TransferStats;
}

/**
 * Progress of a run, at most ~10 times a second and once more when a disk finishes. Counters are
 * absolute totals, so a listener that joins late reads the same numbers as one that was there
 * from the start.
 */
export interface ProgressEvent {
  runId: string;
  job: string;
  state: RunState;
  /** Totals over all disks. */
  stats: TransferStats;
  disks: DiskProgress[];
  /** Milliseconds since the transfer started (in this process). */
  elapsedMs: number;
  /** Bytes of disk examined per second. */
  scanRate: number;
  /** Bytes sent per second. */
  sendRate: number;
  /** Seconds left at the current scan rate, when it can be told. */
  etaSeconds?: number;
}

/** Something the user should know that does not stop the run. */
export interface WarningEvent {
  runId: string;
  job: string;
  /** Stable code, like error codes: `W_REPLICA_MODIFIED`, `W_CLEANUP`, `W_RULE` (see `docs/errors.md`). */
  code: WarningCode;
  message: string;
}

/** Emitted once a run has planned its disks (before any block is read): each disk's mode and why. */
export interface PlanEvent {
  runId: string;
  job: string;
  disks: Array<{
    /** Source disk id. */
    id: string;
    mode: PlanMode;
    /** Where compared blocks' replica digests come from. */
    digestSource?: 'replica' | 'cache';
    reason: PlanReason;
  }>;
}

/** The events of a {@link ReplicationEngine}, for eventemitter3's typed API. */
export interface EngineEvents {
  state: (event: StateEvent) => void;
  progress: (event: ProgressEvent) => void;
  warning: (event: WarningEvent) => void;
  plan: (event: PlanEvent) => void;
}
