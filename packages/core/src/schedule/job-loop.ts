import { hostname } from 'node:os';
import type { Context } from '@opentelemetry/api';
import type { EventEmitter } from 'eventemitter3';
import type { RunRecord } from '../engine/run-record.js';
import { isRunStopped } from '../engine/run-stop.js';
import { findUnfinished, type StateStore } from '../engine/state-store.js';
import { isReplikitError } from '../errors.js';
import type { JobSpec } from '../job/job-spec.js';
import { backoffDelay } from './backoff.js';
import type { Clock } from './clock.js';
import type { DaemonEvents } from './daemon-events.js';
import { classifyError } from './error-class.js';
import { nextRpoChange, rpoLevel, rpoTargets } from './rpo.js';
import { startRunSpan } from './run-span.js';
import { type SchedulePolicies, schedulePolicies, type WindowOption } from './schedule-options.js';
import {
  type DueRun,
  type JobActivity,
  newScheduleState,
  type RunReason,
  type ScheduleState,
} from './schedule-state.js';
import { type SlotCalendar, slotCalendar } from './slot-calendar.js';
import { WindowCalendar } from './window-calendar.js';

/** What the daemon needs of an engine: {@link ReplicationEngine} has it. */
export interface DaemonEngine {
  /** The store runs and schedule states are kept in; it must have the schedule methods. */
  readonly store: StateStore;
  /**
   * `suspend` stops the run at a checkpoint, unfinished (see `RunOptions.suspend`); `traceContext`
   * carries the daemon's `replikit.run` span, the parent of the run's disk spans.
   */
  run(
    job: JobSpec,
    options: { signal?: AbortSignal; suspend?: AbortSignal; traceContext?: Context },
  ): Promise<RunRecord>;
  resume(
    runId: string,
    options: { signal?: AbortSignal; suspend?: AbortSignal; rollback?: boolean; traceContext?: Context },
  ): Promise<RunRecord>;
}

/** A store with the schedule methods. */
export type ScheduleStore = StateStore & Required<Pick<StateStore, 'saveSchedule' | 'loadSchedule' | 'listSchedules'>>;

/** What a {@link JobLoop} is given by its daemon. */
export interface JobLoopContext {
  engine: DaemonEngine;
  store: ScheduleStore;
  clock: Clock;
  random: () => number;
  events: EventEmitter<DaemonEvents>;
  /** Aborted when the daemon stops: the running run is stopped at a checkpoint, waits end. */
  stop: AbortSignal;
  /** The daemon's maintenance windows, for jobs without `options.windows`. */
  windows?: readonly WindowOption[];
}

/**
 * Schedules one job: waits for its slots, runs it through the engine one run at a time, applies
 * the overlap, catch-up and retry policies, and keeps its {@link ScheduleState} in the store,
 * saved before each run starts and after it ends.
 */
export class JobLoop {
  private state: ScheduleState;
  private readonly calendar: SlotCalendar | undefined;
  /** The job's maintenance windows (its own, else the daemon's); `undefined`: always open. */
  private readonly windows: WindowCalendar | undefined;
  private readonly targets;
  private readonly policies: SchedulePolicies;
  /** Aborted to cut the current wait short (pause, resume). */
  private wake = new AbortController();
  /** The run the loop starts next, before waiting again. */
  private pending: RunReason | undefined;
  private saving: Promise<void> = Promise.resolve();
  /** Set at start when slots were missed but an unfinished run is resumed first: the catch-up follows it. */
  private catchUpAfterResume = false;
  /** The decided run being handed to the engine now (kept as due until the engine returns). */
  private starting: DueRun['reason'] | undefined;
  /** The job's last run id as the store last told it: a due run is started once it changes. */
  private lastRunSeen: string | undefined;

  constructor(
    readonly job: JobSpec,
    private readonly context: JobLoopContext,
  ) {
    const schedule = job.options.schedule;
    this.calendar = schedule === undefined ? undefined : slotCalendar(schedule);
    this.targets = rpoTargets(job.options);
    this.policies = schedulePolicies(job.options);
    const windows = job.options.windows ?? context.windows;
    this.windows = windows && windows.length > 0 ? new WindowCalendar(windows) : undefined;
    this.state = newScheduleState(job.name, context.clock.now());
  }

  /**
   * Applies the pause or resume last asked through the store (`replikit daemon pause|resume`),
   * once: a request already applied (same time) is skipped.
   */
  async applyRequest(): Promise<void> {
    const request = await this.context.store.loadScheduleRequest?.(this.job.name);
    if (!request || request.job !== this.job.name || request.at === this.state.controlAt) return;
    this.state.controlAt = request.at;
    if (request.paused) await this.pause();
    else await this.resume();
    const at = new Date(this.context.clock.now()).toISOString();
    this.context.events.emit('control', { job: this.job.name, paused: request.paused, requestedAt: request.at, at });
  }

  /** What the job is doing when no run goes: held, paused, outside its windows, retrying or waiting. */
  private resting(): JobActivity {
    if (this.state.held) return 'held';
    if (this.state.paused) return 'paused';
    if (this.state.window) return 'held';
    return this.state.retryAt ? 'retrying' : 'waiting';
  }

  /**
   * Notes whether the job's windows are open at `now`; announces a change. Outside them the job
   * is `held`, with the time one opens again.
   */
  private checkWindow(now: number): void {
    if (!this.windows) {
      delete this.state.window;
      return;
    }
    const position = this.windows.at(now);
    const at = new Date(now).toISOString();
    if (!position.open) {
      const opensAt = position.opensAt === undefined ? undefined : new Date(position.opensAt).toISOString();
      const closedNow = this.state.window === undefined;
      this.state.window = { since: this.state.window?.since ?? at, ...(opensAt ? { opensAt } : {}) };
      if (closedNow)
        this.context.events.emit('window', { job: this.job.name, open: false, ...(opensAt ? { opensAt } : {}), at });
    } else if (this.state.window) {
      delete this.state.window;
      const closesAt = position.closesAt === undefined ? undefined : new Date(position.closesAt).toISOString();
      this.context.events.emit('window', { job: this.job.name, open: true, ...(closesAt ? { closesAt } : {}), at });
    }
    if (this.state.activity !== 'running') this.state.activity = this.resting();
  }

  /** The job's schedule state as the loop last saved it (a copy). */
  get snapshot(): ScheduleState {
    return structuredClone(this.state);
  }

  /** Stops starting runs of the job (a running run finishes); persisted. */
  async pause(): Promise<void> {
    this.state.paused = true;
    if (this.state.activity !== 'running') this.state.activity = this.resting();
    await this.save();
    this.poke();
  }

  /** Lifts a pause or a hold; persisted. Missed slots are then handled by the catch-up policy. */
  async resume(): Promise<void> {
    const wasStopped = this.state.held !== undefined || this.state.paused;
    if (wasStopped) {
      // The slots that passed while the job was paused or held got no run: missed, then caught up.
      const now = this.context.clock.now();
      const slots = this.slotsSince(now);
      if (slots.count > 0) {
        this.state.lastSlot = new Date(slots.latest!).toISOString();
        this.missed(slots.count, now);
        if (this.policies.catchUp === 'once') this.pending ??= 'catch-up';
      }
    }
    this.state.paused = false;
    delete this.state.held;
    if (this.state.activity !== 'running') this.state.activity = this.resting();
    await this.save();
    this.poke();
  }

  /** Runs until the daemon stops. */
  async loop(): Promise<void> {
    const { clock, stop } = this.context;
    await this.begin();
    while (!stop.aborted) {
      if (this.pending && this.runnable() && !this.state.window) {
        const reason = this.pending;
        this.pending = undefined;
        await this.execute(reason);
        if (!stop.aborted) await this.afterRun(reason);
        continue;
      }
      await this.sleep();
      if (stop.aborted) break;
      const now = clock.now();
      await this.checkRpo(now);
      this.checkWindow(now);
      if (this.state.retryAt !== undefined && Date.parse(this.state.retryAt) <= now && this.runnable()) {
        delete this.state.retryAt;
        this.pending = 'retry';
      }
      const slots = this.slotsSince(now);
      if (slots.count > 0) {
        this.state.lastSlot = new Date(slots.latest!).toISOString();
        if (this.runnable() && !this.state.window) {
          if (this.pending === 'retry') this.state.attempt = 0;
          this.pending = 'slot';
          this.missed(slots.count - 1, now);
        } else {
          this.missed(slots.count, now);
          // Slots outside the windows are caught up when one opens, by the catch-up policy.
          if (this.runnable() && this.policies.catchUp === 'once') {
            // A run held at the window's end is resumed first; the catch-up takes a fresh point after it.
            if (this.pending === 'resume') this.catchUpAfterResume = true;
            else this.pending ??= 'catch-up';
          }
        }
      }
      await this.save();
    }
    this.state.activity = 'stopped';
    delete this.state.currentRunId;
    await this.save();
  }

  /** Loads the state, resumes an unfinished run, counts the slots missed while the daemon was down. */
  private async begin(): Promise<void> {
    const { store, clock } = this.context;
    const now = clock.now();
    const stored = await store.loadSchedule(this.job.name);
    if (stored) this.state = stored;
    if (this.targets) this.state.rpo = { ...this.targets };
    else delete this.state.rpo;
    this.checkWindow(now);
    this.state.activity = this.resting();
    if (this.state.lastPointAt === undefined) await this.pointFromHistory();
    this.lastRunSeen = (await store.loadJob(this.job.name))?.lastRunId;
    // A run decided before a stop or a crash and not started since (the job's last run is the same):
    // it goes first (resuming an unfinished run on the way), and stands for any catch-up.
    const due = this.state.due?.after === this.lastRunSeen ? this.state.due?.reason : undefined;
    if (due) this.pending = due;
    else if (await findUnfinished(store, this.job.name)) this.pending = 'resume';
    if (this.state.lastSlot === undefined) {
      // A job the daemon never scheduled: nothing was missed; its first slot comes next.
      this.state.lastSlot = new Date(now).toISOString();
    } else {
      const slots = this.slotsSince(now);
      if (slots.count > 0) {
        this.state.lastSlot = new Date(slots.latest!).toISOString();
        this.missed(slots.count, now);
        if (this.policies.catchUp === 'once' && !due) {
          if (this.pending === undefined) this.pending = 'catch-up';
          else this.catchUpAfterResume = true;
        }
      }
    }
    await this.checkRpo(now);
    await this.save();
    await this.applyRequest();
  }

  /** The newest complete restore point of a job the daemon has not run yet: its last completed run's snapshot. */
  private async pointFromHistory(): Promise<void> {
    const { store } = this.context;
    const record = await store.loadJob(this.job.name);
    const run = record?.lastCompletedRunId ? await store.loadRun(record.lastCompletedRunId) : undefined;
    const at = run?.stages.snapshot?.snapshot.createdAt ?? run?.startedAt;
    if (at !== undefined && Number.isFinite(Date.parse(at))) this.state.lastPointAt = at;
  }

  private runnable(): boolean {
    return !this.state.paused && this.state.held === undefined;
  }

  private slotsSince(now: number): { count: number; latest?: number } {
    if (!this.calendar || this.state.lastSlot === undefined) return { count: 0 };
    return this.calendar.between(Date.parse(this.state.lastSlot), now);
  }

  private missed(count: number, now: number): void {
    if (count <= 0) return;
    this.state.missedSlots += count;
    this.state.missedTotal += count;
    this.context.events.emit('slot-missed', {
      job: this.job.name,
      count,
      debt: this.state.missedSlots,
      at: new Date(now).toISOString(),
    });
  }

  /** After a run: the slots that came during it are buffered into one run (`buffer-one`) or dropped (`skip`). */
  private async afterRun(reason: RunReason): Promise<void> {
    const now = this.context.clock.now();
    const slots = this.slotsSince(now);
    if (slots.count > 0) {
      this.state.lastSlot = new Date(slots.latest!).toISOString();
      if (this.policies.overlap === 'buffer-one' && this.runnable() && this.pending === undefined) {
        this.pending = 'buffered';
        this.missed(slots.count - 1, now);
      } else {
        this.missed(slots.count, now);
      }
    }
    if (reason === 'resume' && this.catchUpAfterResume) {
      // The resumed run's data is from before the downtime: the catch-up run takes a fresh point.
      this.catchUpAfterResume = false;
      if (this.runnable()) this.pending ??= 'catch-up';
    }
    await this.save();
  }

  /** Waits for the next slot, retry or RPO threshold, or until woken (pause, resume, stop). */
  private async sleep(): Promise<void> {
    const { clock, stop } = this.context;
    const now = clock.now();
    const lastSlot = this.state.lastSlot === undefined ? now : Date.parse(this.state.lastSlot);
    const nextSlot = this.calendar?.next(lastSlot);
    this.state.nextDue = nextSlot === undefined ? undefined : new Date(nextSlot).toISOString();
    if (this.state.nextDue === undefined) delete this.state.nextDue;
    const candidates = [nextRpoChange(this.pointAt(), this.targets, now)];
    const position = this.windows?.at(now);
    if (position) candidates.push(position.open ? position.closesAt : position.opensAt);
    if (this.runnable()) {
      candidates.push(nextSlot);
      if (this.state.retryAt !== undefined) candidates.push(Date.parse(this.state.retryAt));
    }
    const due = candidates.filter((t): t is number => t !== undefined);
    await this.save();
    this.wake = new AbortController();
    const signal = AbortSignal.any([stop, this.wake.signal]);
    // With nothing to wait for, the wait ends only when woken.
    const until = due.length > 0 ? Math.min(...due) : Number.MAX_SAFE_INTEGER;
    await clock.sleepUntil(until, signal).catch((error: unknown) => {
      if (!isReplikitError(error, 'E_ABORTED')) throw error;
    });
  }

  private poke(): void {
    this.wake.abort();
  }

  private pointAt(): number | undefined {
    return this.state.lastPointAt === undefined ? undefined : Date.parse(this.state.lastPointAt);
  }

  /** Works out the RPO level at `now`; announces a change. */
  private async checkRpo(now: number): Promise<void> {
    const pointAt = this.pointAt();
    const achieved = pointAt === undefined ? undefined : Math.max(0, now - pointAt);
    const level = rpoLevel(achieved, this.targets);
    if (level === this.state.rpoLevel) return;
    const from = this.state.rpoLevel;
    this.state.rpoLevel = level;
    this.context.events.emit('rpo', {
      job: this.job.name,
      from,
      to: level,
      ...(achieved === undefined ? {} : { achievedSeconds: achieved / 1000 }),
      ...(this.targets ? { targetSeconds: this.targets.target / 1000 } : {}),
      at: new Date(now).toISOString(),
    });
  }

  /** Runs the job once (or resumes its unfinished run), and records how it ended. */
  private async execute(reason: RunReason): Promise<void> {
    const { engine, store, clock, stop, events } = this.context;
    const unfinished = await findUnfinished(store, this.job.name);
    const actual: RunReason = unfinished ? 'resume' : reason;
    if (unfinished && reason !== 'resume') this.pending = reason; // the wanted run follows the resumed one
    if (!unfinished && reason !== 'resume') this.starting = reason;
    const startedAt = clock.now();
    this.state.activity = 'running';
    delete this.state.retryAt;
    if (unfinished) this.state.currentRunId = unfinished.runId;
    else delete this.state.currentRunId;
    await this.save();
    events.emit('run-start', {
      job: this.job.name,
      reason: actual,
      ...(unfinished ? { runId: unfinished.runId } : {}),
      at: new Date(startedAt).toISOString(),
    });
    const span = startRunSpan({ job: this.job.name, reason: actual });
    let record: RunRecord | undefined;
    let failure: unknown;
    // The daemon stopping, or the window closing, stops the run at a checkpoint: it is resumed later.
    const edge = new AbortController();
    const ended = new AbortController();
    const position = this.windows?.at(startedAt);
    if (position?.open && position.closesAt !== undefined) {
      clock.sleepUntil(position.closesAt, ended.signal).then(
        () => edge.abort('window'),
        () => undefined,
      );
    }
    const suspend = AbortSignal.any([stop, edge.signal]);
    // A run the daemon stopped itself is always resumed; `unfinished: rollback` is for crashes.
    const rollback = this.policies.unfinished === 'rollback' && unfinished?.stopped === undefined;
    try {
      record = unfinished
        ? await engine.resume(unfinished.runId, { suspend, rollback, traceContext: span.context })
        : await engine.run(this.job, { suspend, traceContext: span.context });
    } catch (error) {
      failure = error;
    } finally {
      ended.abort();
    }
    this.starting = undefined;
    const history = await store.loadJob(this.job.name).catch(() => undefined);
    this.lastRunSeen = history?.lastRunId ?? record?.runId ?? this.lastRunSeen;
    const now = clock.now();
    const at = new Date(now).toISOString();
    const runId = record?.runId ?? unfinished?.runId ?? runIdOf(failure);
    delete this.state.currentRunId;
    const base = { reason: actual, startedAt: new Date(startedAt).toISOString(), finishedAt: at };
    let retryAt: string | undefined;
    if (isRunStopped(failure)) {
      // Parked at a checkpoint: no failure, no retry; the next execution resumes it first.
      const message = (failure as Error).message;
      this.state.lastOutcome = { ...(runId ? { runId } : {}), outcome: 'stopped', code: 'E_ABORTED', message, ...base };
      if (!stop.aborted) this.pending ??= 'resume';
      this.checkWindow(now);
    } else if (record && record.state === 'completed') {
      this.state.lastOutcome = { ...(runId ? { runId } : {}), outcome: 'completed', ...base };
      this.state.lastPointAt = pointTime(actual, record, startedAt);
      this.state.missedSlots = 0;
      this.state.attempt = 0;
    } else if (record && actual === 'resume' && rollback && !stop.aborted) {
      // Rolled back by policy: the replica is back at its previous point; nothing failed.
      this.state.lastOutcome = { ...(runId ? { runId } : {}), outcome: 'cancelled', ...base };
    } else {
      const code = isReplikitError(failure)
        ? failure.code
        : failure
          ? 'E_INTERNAL'
          : (record?.error?.code ?? 'E_STATE');
      const message =
        failure instanceof Error ? failure.message : (record?.error?.message ?? `the run ended ${record?.state}`);
      const errorClass = classifyError(code);
      const cancelled = stop.aborted || record?.state === 'cancelled';
      this.state.lastOutcome = {
        ...(runId ? { runId } : {}),
        outcome: cancelled ? 'cancelled' : 'failed',
        code,
        message,
        errorClass,
        ...base,
      };
      if (!stop.aborted) {
        // A slot whose run failed made no restore point: it adds to the RPO debt (a retry is no new slot).
        if (actual !== 'retry' && actual !== 'resume') this.state.missedSlots++;
        retryAt = this.afterFailure(code, message, errorClass, now);
      }
    }
    this.state.activity = this.resting();
    await this.checkRpo(now);
    await this.save();
    const outcome = this.state.lastOutcome;
    span.end({
      ...(runId ? { runId } : {}),
      outcome: outcome.outcome,
      ...(outcome.code ? { code: outcome.code } : {}),
    });
    events.emit('run-end', {
      job: this.job.name,
      reason: actual,
      ...(runId ? { runId } : {}),
      outcome: outcome.outcome,
      ...(outcome.code ? { code: outcome.code, message: outcome.message! } : {}),
      ...(outcome.errorClass ? { errorClass: outcome.errorClass } : {}),
      ...(record ? { bytesSent: record.stats?.bytesSent ?? 0 } : {}),
      durationSeconds: (now - startedAt) / 1000,
      ...(retryAt ? { retryAt } : {}),
      at,
    });
  }

  /** Applies the retry policy to a failure; returns when it is retried. */
  private afterFailure(code: string, message: string, errorClass: string, now: number): string | undefined {
    if (errorClass === 'needs-decision') {
      this.state.attempt = 0;
      this.state.held = { code, message, at: new Date(now).toISOString() };
      this.context.events.emit('held', { job: this.job.name, code, message, at: this.state.held.at });
      return undefined;
    }
    if (errorClass === 'transient' && this.state.attempt < this.policies.retry.attempts) {
      this.state.attempt++;
      const retryAt = new Date(now + backoffDelay(this.state.attempt, this.policies.retry, this.context.random));
      this.state.retryAt = retryAt.toISOString();
      return this.state.retryAt;
    }
    // Permanent, or out of retries: the next slot tries again.
    this.state.attempt = 0;
    return undefined;
  }

  /** Saves the state; saves are serialized so an older one never overtakes a newer one. */
  private save(): Promise<void> {
    const due = this.starting ?? (this.pending === 'resume' ? undefined : this.pending);
    if (due) this.state.due = { reason: due, ...(this.lastRunSeen ? { after: this.lastRunSeen } : {}) };
    else delete this.state.due;
    this.state.updatedAt = new Date(this.context.clock.now()).toISOString();
    this.state.pid = process.pid;
    this.state.host = hostname();
    const copy = structuredClone(this.state);
    const next = this.saving.then(() => this.context.store.saveSchedule(copy));
    this.saving = next.catch(() => undefined);
    return next;
  }
}

function runIdOf(error: unknown): string | undefined {
  const details = isReplikitError(error) ? error.details : undefined;
  return typeof details?.runId === 'string' ? details.runId : undefined;
}

/**
 * The time of the restore point a completed run made: when the daemon started it (its snapshot is
 * taken just after, so the RPO is never understated), or its snapshot's time for a resumed run.
 */
function pointTime(reason: RunReason, record: RunRecord, startedAt: number): string {
  const snapshotAt = record.snapshot?.createdAt;
  if (reason === 'resume' && snapshotAt !== undefined && Number.isFinite(Date.parse(snapshotAt))) return snapshotAt;
  return new Date(startedAt).toISOString();
}
