import { hostname } from 'node:os';
import type { StateStore } from '../engine/state-store.js';
import { InputError } from '../errors.js';
import { isProcessAlive } from '../util/process-alive.js';
import { type RpoLevel, rpoLevel } from './rpo.js';
import type { JobActivity, LastOutcome, ScheduleState } from './schedule-state.js';

/** One job as `replikit status` shows it. Durations in seconds. */
export interface JobStatus {
  job: string;
  /**
   * What the daemon is (or was last) doing with the job; `paused` and `held` win; `down` when the
   * daemon that saved it on this host is gone without stopping (killed, crashed).
   */
  state: JobActivity | 'down';
  /** How the last run ended, and why it failed. */
  lastRun?: LastOutcome;
  /** Age of the newest complete restore point, at the time of the status. */
  achievedRpoSeconds?: number;
  /** The RPO target, when the job sets one. */
  rpoTargetSeconds?: number;
  rpoWarnSeconds?: number;
  rpoCriticalSeconds?: number;
  /** The achieved RPO against the thresholds. */
  rpoLevel: RpoLevel;
  /** The newest complete restore point's time. */
  lastPointAt?: string;
  /** The next slot (ISO). */
  nextDue?: string;
  /** When a retry is due. */
  retryAt?: string;
  /** The RPO debt: slots since the last successful run that made no restore point (missed, or their run failed). */
  rpoDebtSlots: number;
  /** Why the job is held, when a failure needs a decision. */
  held?: { code: string; message: string; at: string };
  /**
   * Set while the job's maintenance windows are all closed (state `held`): since when, and when
   * one opens again (absent: never).
   */
  window?: { since: string; opensAt?: string };
  /** True when the job is paused (`replikit daemon pause`); it may be held too. */
  paused: boolean;
  /** When the daemon last saved the job's state. */
  updatedAt: string;
}

/** True when the daemon that saved `state` ran on this host and its process is gone. */
function daemonGone(state: ScheduleState): boolean {
  return state.pid !== undefined && state.host === hostname() && !isProcessAlive(state.pid);
}

/** The status of one job's schedule state at time `now` (milliseconds since the epoch). */
export function jobStatusOf(state: ScheduleState, now: number): JobStatus {
  const pointAt = state.lastPointAt === undefined ? undefined : Date.parse(state.lastPointAt);
  const achieved = pointAt === undefined ? undefined : Math.max(0, now - pointAt);
  const activity: JobActivity | 'down' = state.held
    ? 'held'
    : state.paused
      ? 'paused'
      : state.activity !== 'stopped' && daemonGone(state)
        ? 'down'
        : state.window && state.activity !== 'stopped' && state.activity !== 'running'
          ? 'held'
          : state.activity;
  return {
    job: state.job,
    state: activity,
    ...(state.lastOutcome ? { lastRun: state.lastOutcome } : {}),
    ...(achieved === undefined ? {} : { achievedRpoSeconds: achieved / 1000 }),
    ...(state.rpo
      ? {
          rpoTargetSeconds: state.rpo.target / 1000,
          rpoWarnSeconds: state.rpo.warn / 1000,
          rpoCriticalSeconds: state.rpo.critical / 1000,
        }
      : {}),
    rpoLevel: rpoLevel(achieved, state.rpo),
    ...(state.lastPointAt ? { lastPointAt: state.lastPointAt } : {}),
    ...(state.nextDue && activity !== 'paused' && activity !== 'held' && activity !== 'down'
      ? { nextDue: state.nextDue }
      : {}),
    ...(state.retryAt ? { retryAt: state.retryAt } : {}),
    rpoDebtSlots: state.missedSlots,
    ...(state.held ? { held: state.held } : {}),
    ...(state.window ? { window: state.window } : {}),
    paused: state.paused,
    updatedAt: state.updatedAt,
  };
}

/**
 * The status of every job the daemon has scheduled with `store`, at `now` (milliseconds since the
 * epoch): what `replikit status` prints.
 *
 * @throws {@link InputError} when the store keeps no schedule states.
 */
export async function readJobStatuses(store: StateStore, now: number = Date.now()): Promise<JobStatus[]> {
  if (!store.listSchedules) throw new InputError('this state store keeps no schedule states');
  return (await store.listSchedules()).map((state) => jobStatusOf(state, now));
}
