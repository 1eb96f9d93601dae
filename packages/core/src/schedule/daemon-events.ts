import type { ErrorClass } from './error-class.js';
import type { RpoLevel } from './rpo.js';
import type { RunReason } from './schedule-state.js';

/** A run the daemon starts. `at` is an ISO time on the daemon's clock. */
export interface DaemonRunStartEvent {
  job: string;
  reason: RunReason;
  /** Set when an unfinished run is resumed. */
  runId?: string;
  at: string;
}

/** A run the daemon started has ended. */
export interface DaemonRunEndEvent {
  job: string;
  reason: RunReason;
  runId?: string;
  /**
   * `stopped`: the run was stopped at a checkpoint (the daemon stopping, a maintenance window's
   * end) and is left unfinished, to be resumed.
   */
  outcome: 'completed' | 'failed' | 'cancelled' | 'stopped';
  code?: string;
  message?: string;
  errorClass?: ErrorClass;
  /** Bytes the run sent (a completed run's total). */
  bytesSent?: number;
  /** How long the run took on the daemon's clock, in seconds. */
  durationSeconds: number;
  /** When the run is retried (transient failures with retries left). */
  retryAt?: string;
  at: string;
}

/** Slots passed without a run of their own (downtime, a pause, or coalesced into one run). */
export interface DaemonSlotMissedEvent {
  job: string;
  /** Slots missed now. */
  count: number;
  /** The job's RPO debt: slots missed since its last successful run. */
  debt: number;
  at: string;
}

/** A job's RPO level changed. */
export interface DaemonRpoEvent {
  job: string;
  from: RpoLevel;
  to: RpoLevel;
  /** The achieved RPO in seconds (age of the newest complete restore point), when there is one. */
  achievedSeconds?: number;
  /** The target in seconds. */
  targetSeconds?: number;
  at: string;
}

/** A failure that needs a decision: the job is held until {@link Daemon.resumeJob}. */
export interface DaemonHeldEvent {
  job: string;
  code: string;
  message: string;
  at: string;
}

/**
 * A job's maintenance window closed (transfers are held: a running run is stopped at a
 * checkpoint) or opened again.
 */
export interface DaemonWindowEvent {
  job: string;
  open: boolean;
  /** When closed: when a window opens again (absent: never). */
  opensAt?: string;
  /** When open: when it closes (absent: never). */
  closesAt?: string;
  at: string;
}

/** A pause or resume asked through the state store (`replikit daemon pause|resume`) was applied. */
export interface DaemonControlEvent {
  job: string;
  paused: boolean;
  /** When it was asked. */
  requestedAt: string;
  at: string;
}

/** Something the daemon itself could not do (save a job's schedule state, say); the job's loop starts again 30 s later. */
export interface DaemonErrorEvent {
  job: string;
  error: unknown;
}

/** The events of a {@link Daemon}, for eventemitter3's typed API. */
export interface DaemonEvents {
  'run-start': (event: DaemonRunStartEvent) => void;
  'run-end': (event: DaemonRunEndEvent) => void;
  'slot-missed': (event: DaemonSlotMissedEvent) => void;
  rpo: (event: DaemonRpoEvent) => void;
  held: (event: DaemonHeldEvent) => void;
  window: (event: DaemonWindowEvent) => void;
  control: (event: DaemonControlEvent) => void;
  error: (event: DaemonErrorEvent) => void;
}
