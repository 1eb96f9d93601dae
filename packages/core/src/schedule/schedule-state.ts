import type { ErrorClass } from './error-class.js';
import type { RpoLevel } from './rpo.js';

/** What the daemon is doing with a job. */
export type JobActivity = 'waiting' | 'running' | 'retrying' | 'paused' | 'held' | 'stopped';

/** How a job's last run ended, as the schedule keeps it. */
export interface LastOutcome {
  runId?: string;
  /** `stopped`: stopped at a checkpoint (daemon stop, window end) and left unfinished, to be resumed. */
  outcome: 'completed' | 'failed' | 'cancelled' | 'stopped';
  /** The error's code and message when it failed. */
  code?: string;
  message?: string;
  /** The error's class, when it failed. */
  errorClass?: ErrorClass;
  /** Why the run was started: a slot, a catch-up, a buffered slot, a retry, or a resume at start. */
  reason: RunReason;
  /** ISO times. */
  startedAt: string;
  finishedAt: string;
}

/** Why the daemon started a run. */
export type RunReason = 'slot' | 'catch-up' | 'buffered' | 'retry' | 'resume';

/** A run decided and not yet started ({@link ScheduleState.due}). */
export interface DueRun {
  /** Why it was decided. */
  reason: Exclude<RunReason, 'resume'>;
  /** The job's last run id when it was decided (absent: the job had no run). */
  after?: string;
}

/**
 * The durable schedule state of one job (version 1), saved atomically at every decision so a
 * restart neither loses nor replays a slot. Times are ISO strings.
 */
export interface ScheduleState {
  version: 1;
  /** The job's name. */
  job: string;
  /** The latest slot the daemon has handled (ran, buffered into a run, or counted as missed). */
  lastSlot?: string;
  /**
   * A run the daemon decided to start (for a slot, a catch-up, a buffered slot or a retry) and
   * has not seen started yet; `after` is the job's last run id when it decided. A daemon that
   * starts with it set and finds the job's last run still `after` starts that run; it was lost
   * otherwise (a kill between the decision and the run's start, or a stop while a resumed run
   * went first).
   */
  due?: DueRun;
  /** The next slot. */
  nextDue?: string;
  /** When a retry is due (transient failures). */
  retryAt?: string;
  /** Retries made for the current failure. */
  attempt: number;
  /**
   * The RPO debt: slots since the last successful run that made no restore point (they got no run
   * of their own, or their run failed).
   */
  missedSlots: number;
  /** Slots that got no run of their own, in all, since the schedule state was created. */
  missedTotal: number;
  /** Set by `pause`; cleared by `resume`. */
  paused: boolean;
  /** Set when a failure needs a decision: the job is held until it is resumed. */
  held?: { code: string; message: string; at: string };
  /**
   * Set while the job's maintenance windows are all closed: transfers are held (activity `held`)
   * until one opens, at `opensAt` (absent: none opens again).
   */
  window?: { opensAt?: string; since: string };
  /** The time of the last pause or resume asked through the store that the daemon applied. */
  controlAt?: string;
  /** What the daemon is doing with the job. */
  activity: JobActivity;
  /** The run now going, if any. */
  currentRunId?: string;
  /** How the last run ended. */
  lastOutcome?: LastOutcome;
  /** The time of the newest complete restore point (a successful run's start: its snapshot is taken after). */
  lastPointAt?: string;
  /** The RPO target and thresholds in milliseconds, when the job sets `rpo`. */
  rpo?: { target: number; warn: number; critical: number };
  /** The last RPO level the daemon announced. */
  rpoLevel: RpoLevel;
  /** The process and host of the daemon that saved the state (absent before its first save). */
  pid?: number;
  host?: string;
  /** ISO time of the last change. */
  updatedAt: string;
}

/** A job's schedule state before its first decision. */
export function newScheduleState(job: string, now: number): ScheduleState {
  return {
    version: 1,
    job,
    attempt: 0,
    missedSlots: 0,
    missedTotal: 0,
    paused: false,
    activity: 'waiting',
    rpoLevel: 'unknown',
    updatedAt: new Date(now).toISOString(),
  };
}

/**
 * A pause or resume of a job asked through the state store (`replikit daemon pause|resume`), kept
 * until replaced; the daemon applies each request once (it keeps the request's time as
 * {@link ScheduleState.controlAt}), whether it runs now or starts later.
 */
export interface ScheduleRequest {
  version: 1;
  job: string;
  /** True: pause the job; false: resume it (lift a pause, a hold, or both). */
  paused: boolean;
  /** ISO time of the request; a newer request replaces an older one. */
  at: string;
}
