import type { Context } from '@opentelemetry/api';
import type { Hypervisor } from '../contracts/hypervisor.js';
import { isReplikitError, ReplikitError, throwIfAborted } from '../errors.js';
import type { WarningCode } from '../warnings.js';
import { toJournal } from './journal-format.js';
import { ProgressReporter } from './progress-reporter.js';
import type { RunDependencies } from './run-dependencies.js';
import type { RunJournal } from './run-journal.js';
import type { JobRecord } from './run-record.js';
import { assertTransition, isTerminal, type RunState } from './run-state.js';
import { isRunStopped, runStoppedError, stopReasonOf } from './run-stop.js';
import { cleanUp } from './stages/cleanup-stage.js';
import { commitStage } from './stages/commit-stage.js';
import { planStage } from './stages/plan-stage.js';
import { prepareStage } from './stages/prepare-stage.js';
import { snapshotStage } from './stages/snapshot-stage.js';
import type { RunContext, Stage } from './stages/stage.js';
import { transferStage } from './stages/transfer-stage.js';
import { validateStage } from './stages/validate-stage.js';

export type { RunDependencies } from './run-dependencies.js';

/** The working stages of a run, in order; `cleanup` follows every path (see {@link cleanUp}). */
const STAGES: readonly Stage[] = [validateStage, prepareStage, snapshotStage, planStage, transferStage, commitStage];

/** Turns anything thrown into the `{ code, message }` a journal keeps. */
function describeError(error: unknown): { code: string; message: string } {
  if (isReplikitError(error)) return { code: error.code, message: error.message };
  return { code: 'E_INTERNAL', message: error instanceof Error ? error.message : String(error) };
}

/**
 * Drives one run through its stages, from whatever state its journal holds to a terminal state.
 * Every stage is written so that running it again after a crash is safe: that is what makes
 * `resume` work.
 */
export class RunExecution {
  private source: Hypervisor | undefined;
  private target: Hypervisor | undefined;
  private saving: Promise<void> = Promise.resolve();
  private history: Promise<JobRecord | undefined> | undefined;
  /** What the stages see of this execution. */
  private readonly context: RunContext;
  /** Aborted when a stop's grace runs out: the work ends where it is, as a crash would end it. */
  private readonly halt = new AbortController();
  private graceTimer: NodeJS.Timeout | undefined;
  /** Removes the stop listener from `suspend` (a daemon's stop signal outlives many runs). */
  private readonly unlistenSuspend: () => void;

  /**
   * @param signal - cancels the run: it is rolled back.
   * @param suspend - stops the run at its next checkpoint and leaves it unfinished (resumable).
   * @param traceContext - the OpenTelemetry context the run's disk spans are children of.
   */
  constructor(
    private readonly deps: RunDependencies,
    readonly record: RunJournal,
    private readonly signal: AbortSignal,
    private readonly suspend?: AbortSignal,
    traceContext?: Context,
  ) {
    const onStop = () => {
      // A checkpoint comes within a segment of every disk; work that has none (a pull, a whole-VM
      // copy, a slow driver call) is ended after the grace, leaving the journal as it last was.
      this.graceTimer = setTimeout(() => this.halt.abort(this.stoppedError()), deps.stopGraceMs);
      this.graceTimer.unref();
    };
    if (suspend?.aborted) onStop();
    else suspend?.addEventListener('abort', onStop, { once: true });
    this.unlistenSuspend = () => suspend?.removeEventListener('abort', onStop);
    this.context = {
      record,
      deps,
      signal: AbortSignal.any([signal, this.halt.signal]),
      ...(suspend ? { suspend } : {}),
      ...(traceContext ? { traceContext } : {}),
      progress: new ProgressReporter(record, deps.events),
      drivers: () => this.drivers(),
      jobHistory: () => {
        // The job lock keeps the job's record unchanged while the run holds it.
        this.history ??= deps.store.loadJob(record.job.name);
        return this.history;
      },
      save: () => this.save(),
      warn: (code, message) => this.warn(code, message),
    };
  }

  /**
   * Runs until the run ends. Resolves with the final journal; rejects with the run's error.
   * `rollback` undoes the run's own writes; `abandon` ends it without reverting anything.
   */
  async drive(options: { rollback?: boolean; abandon?: boolean } = {}): Promise<RunJournal> {
    try {
      return await this.driveStages(options);
    } finally {
      this.unlistenSuspend();
      clearTimeout(this.graceTimer);
    }
  }

  private async driveStages(options: { rollback?: boolean; abandon?: boolean }): Promise<RunJournal> {
    const record = this.record;
    const resumedAt = STAGES.findIndex((stage) => stage.state === record.state);
    // A parked run goes on: it is no longer stopped (journaled with its next save).
    delete record.stopped;
    await this.endEarly(options);
    let failure: unknown;
    try {
      // A resumed run takes again what the stages before its state held (the replica's hold).
      if (resumedAt > 0 && record.state === STAGES[resumedAt]!.state) {
        for (const stage of STAGES.slice(0, resumedAt)) await stage.resume?.(this.context);
      }
      for (const stage of STAGES) {
        if (record.state === 'created') await this.transition('validate');
        if (record.state !== stage.state) continue;
        throwIfAborted(this.context.signal);
        // A stop lets a run that has transferred everything commit; before that, it parks here.
        if (this.suspend?.aborted && stage !== commitStage) throw this.stoppedError();
        await stage.run(this.context);
        if (stage === commitStage) record.outcome = 'completed';
        await this.transition(stage === commitStage ? 'cleanup' : STAGES[STAGES.indexOf(stage) + 1]!.state);
      }
    } catch (error) {
      if (this.parks(error)) {
        await this.park();
        throw this.stoppedError();
      }
      failure = error;
      record.outcome = isReplikitError(error, 'E_ABORTED') ? 'cancelled' : 'failed';
      record.error = describeError(error);
      if (record.state !== 'cleanup' && !isTerminal(record.state)) await this.transition('cleanup');
    }
    if (record.state === 'cleanup') {
      try {
        await cleanUp(this.context, STAGES, record.outcome ?? 'completed');
        delete record.cleanupError;
      } catch (error) {
        // A cleanup that fails never hides the run's own error: that one stays the run's error
        // (journaled before cleanup began, or by the pass that first failed) and is what throws.
        const own = record.outcome === 'completed' ? undefined : record.error;
        if (own === undefined) {
          record.error = describeError(error);
        } else {
          record.cleanupError = describeError(error);
          this.context.warn(
            'W_CLEANUP',
            `run ${record.runId} failed, then its cleanup failed too (${record.cleanupError.code}: ${record.cleanupError.message}); \`replikit resume ${record.runId}\` tries the cleanup again`,
          );
        }
        await this.save();
        await this.closeDrivers();
        if (failure !== undefined) throw failure;
        if (own === undefined) throw error;
        throw new ReplikitError(own.code as never, own.message, { cause: error, details: { runId: record.runId } });
      }
      await this.closeDrivers();
      await this.transition(record.outcome ?? 'completed');
    } else {
      await this.closeDrivers();
    }
    if (failure !== undefined) throw failure;
    // A rollback or an abandon that did its work returns the record: the error that stopped the
    // run stays in its journal but is not the outcome of this call.
    if (record.outcome === 'failed' && record.error) {
      throw new ReplikitError(record.error.code as never, record.error.message, { details: { runId: record.runId } });
    }
    return record;
  }

  /**
   * True when the run stops unfinished instead of being rolled back: a stop was asked (and not a
   * cancel), and the error is the stop itself or any failure after the stop's grace ran out.
   */
  private parks(error: unknown): boolean {
    if (!this.suspend?.aborted || this.signal.aborted) return false;
    if (this.record.state === 'cleanup' || isTerminal(this.record.state)) return false;
    return isRunStopped(error) || this.halt.signal.aborted || isReplikitError(error, 'E_ABORTED');
  }

  private stoppedError() {
    return runStoppedError(this.record.runId, stopReasonOf(this.suspend!));
  }

  /**
   * Leaves the run unfinished, as its journal last said (what a crash at this moment would leave,
   * which resume handles), marked stopped with the reason. A push transfer journaled a checkpoint
   * of every disk just before, so nothing it wrote is sent again.
   */
  private async park(): Promise<void> {
    await this.saving;
    const stored = await this.deps.store.loadRun(this.record.runId);
    // A run stopped before its first save has done nothing (validate acts on nothing): it is journaled as it is.
    const journal = stored ? toJournal(stored) : this.record;
    journal.stopped = { reason: stopReasonOf(this.suspend!), at: new Date().toISOString() };
    journal.pid = process.pid;
    await this.deps.store.saveRun(journal, this.deps.saveOptions);
    await this.closeDrivers();
  }

  /** A rollback or an abandon of an unfinished run goes straight to cleanup. */
  private async endEarly(options: { rollback?: boolean; abandon?: boolean }): Promise<void> {
    const record = this.record;
    const committed = record.state === 'cleanup' && record.outcome === 'completed';
    if (options.abandon && !committed && !isTerminal(record.state)) {
      record.outcome = 'cancelled';
      record.stages.cleanup = { ...record.stages.cleanup, abandoned: true };
      if (record.state === 'created') await this.transition('validate');
      if (record.state !== 'cleanup') await this.transition('cleanup');
    } else if (options.rollback && committed) {
      this.warn('W_ROLLBACK', `run ${record.runId} had already committed; it is finished instead of rolled back`);
    } else if (options.rollback && !isTerminal(record.state)) {
      record.outcome = 'cancelled';
      record.stages.cleanup = { ...record.stages.cleanup, rolledBack: true };
      if (record.state !== 'cleanup') await this.transition('cleanup');
    }
  }

  // ── journal ──────────────────────────────────────────────────────────────────────────────

  private async transition(to: RunState): Promise<void> {
    const record = this.record;
    const from = record.state;
    assertTransition(from, to);
    const at = new Date().toISOString();
    record.state = to;
    record.history.push({ state: to, at });
    if (isTerminal(to)) record.finishedAt = at;
    // Each step journals what it did before doing what depends on it (the replica it created, the
    // snapshot it took, the plan, every checkpoint, the restore point), and a step started again
    // after a crash finds that. So entering a working state needs no save of its own (each costs
    // an fsync or two); the new state is written with the step's next save. Entering cleanup does:
    // it says whether the run committed (a rollback must not undo a committed run), as do the ends.
    if (to === 'cleanup' || isTerminal(to)) await this.save();
    this.deps.events.emit('state', { runId: record.runId, job: record.job.name, from, to, at });
  }

  /** Saves the journal; saves are serialized so a slow one never overtakes a newer one. */
  private save(): Promise<void> {
    const record = this.record;
    const next = this.saving.then(() => {
      record.updatedAt = new Date().toISOString();
      record.pid = process.pid;
      return this.deps.store.saveRun(record, this.deps.saveOptions);
    });
    this.saving = next.catch(() => undefined);
    return next;
  }

  private warn(code: WarningCode, message: string): void {
    this.record.warnings.push({ code, message });
    this.deps.events.emit('warning', { runId: this.record.runId, job: this.record.job.name, code, message });
  }

  // ── drivers ──────────────────────────────────────────────────────────────────────────────

  private async drivers(): Promise<{ source: Hypervisor; target: Hypervisor }> {
    const { method, options } = this.record.job;
    const context = { method, direction: options.direction };
    this.source ??= await this.deps.drivers.create(this.record.job.source, { side: 'source', ...context });
    this.target ??=
      (await this.deps.targetDriver?.(this.record.job)) ??
      (await this.deps.drivers.create(this.record.job.target, { side: 'target', ...context }));
    return { source: this.source, target: this.target };
  }

  private async closeDrivers(): Promise<void> {
    const all = [this.source, this.target];
    this.source = undefined;
    this.target = undefined;
    for (const driver of all) await driver?.close().catch(() => undefined);
  }
}
