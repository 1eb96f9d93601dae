import { ConflictError, isReplikitError, isRunStopped, type ReplicationEngine, type RunRecord } from '@replikit/core';
import type PgBoss from 'pg-boss';
import { type HeldSlots, takeLimitSlots } from '../limit-slots.js';
import type { PostgresStateStore } from '../postgres-state-store.js';
import { checkRunLimits, limitWantsOf, type RunLimits } from './run-limits.js';
import { RUN_QUEUE, type RunAnswer, type RunRequest } from './run-queue.js';

/** A run this worker is carrying out. */
export interface RunningRun {
  /** The job's name. */
  job: string;
  /** The run's id, once it has one. */
  runId?: string;
  /** The request's id (the queue job's). */
  requestId: string;
  /** While the run waits for a slot of a run limit: which one (`scope:key`). */
  waitingFor?: string;
  /** The run-limit slots it holds (`scope:key#n`). */
  slots?: string[];
}

/** What a worker counts of its runs, for `replikit workers` and metrics. */
export interface WorkerCounters {
  /** Runs this worker completed. */
  runsDone: number;
  /** Runs that failed or were cancelled on this worker (stopped runs are not counted). */
  runsFailed: number;
  /** Bytes this worker's runs sent (each run's total, counted where it ended). */
  bytesSent: number;
}

/**
 * Takes run requests from the queue and carries them out through `engine`, `concurrency` at a
 * time. A request delivered again (the queue is at-least-once) is a no-op: a request whose run is
 * known resumes that run (which returns a finished run as it is), and an unfinished run of the job
 * is resumed rather than a new one started. A job or replica busy elsewhere (`E_CONFLICT`, a lease
 * not yet expired, `E_LEASE_LOST`) sends the request back to the queue, delivered again later.
 * With `limits` ({@link RunLimits}), a request first takes a slot of each limit its job counts
 * against, shared by every worker through PostgreSQL; it waits on this worker while one is full
 * (neither sent back to the queue nor started), and holds them until its run ends.
 */
export class RunWorker {
  /** The runs carried out now, by request id. */
  readonly running = new Map<string, RunningRun>();
  /** What this worker counted since it started. */
  readonly counters: WorkerCounters = { runsDone: 0, runsFailed: 0, bytesSent: 0 };
  private readonly drain = new AbortController();
  private readonly workIds: string[] = [];

  /**
   * @param worker - this worker's name, recorded with each request it takes.
   * @param onEnd - called when a request ends, with the run's record or the error.
   * @param limits - the cluster's run limits (every worker should be given the same).
   */
  constructor(
    private readonly engine: ReplicationEngine,
    private readonly store: PostgresStateStore,
    private readonly boss: PgBoss,
    private readonly worker: string,
    private readonly onEnd?: (request: RunRequest, outcome: { record?: RunRecord; error?: unknown }) => void,
    private readonly limits?: RunLimits,
  ) {
    if (limits) checkRunLimits(limits);
  }

  /** Starts taking requests. */
  async start(concurrency = 1, pollingIntervalSeconds = 0.5): Promise<void> {
    for (let i = 0; i < concurrency; i++) {
      this.workIds.push(
        await this.boss.work<RunRequest>(RUN_QUEUE, { batchSize: 1, pollingIntervalSeconds }, async ([job]) =>
          job ? this.take(job.data) : {},
        ),
      );
    }
  }

  /**
   * Stops taking requests and stops the running runs at a checkpoint (each answered as stopped,
   * unfinished and resumable by any worker); resolves once they have. A request the queue hands
   * over after this (its fetch was in flight) starts no run: it goes back to the queue.
   */
  async stop(): Promise<void> {
    for (const id of this.workIds.splice(0)) await this.boss.offWork({ id });
    this.drain.abort('stopped');
    while (this.running.size > 0) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  /**
   * The queue's handler. pg-boss still delivers the request of a fetch that was in flight when
   * the worker was stopped (`offWork` does not wait for it); such a request is refused (thrown, so
   * the queue delivers it again, to a live worker) instead of starting a run on a worker whose
   * queue and store are closing.
   */
  private async take(request: RunRequest): Promise<RunAnswer> {
    if (this.drain.signal.aborted) {
      const error = new ConflictError(
        `worker ${this.worker} is draining: the request to run job '${request.job.name}' goes back to the queue`,
        { details: { requestId: request.requestId } },
      );
      this.onEnd?.(request, { error });
      throw error;
    }
    return this.carryOut(request);
  }

  private async carryOut(request: RunRequest): Promise<RunAnswer> {
    const running: RunningRun = { job: request.job.name, requestId: request.requestId };
    this.running.set(request.requestId, running);
    // The run's own stop signal, tied to the drain for this run only: the engine adds a listener
    // to the signal it is given and keeps it, so giving it the worker-long drain signal would
    // leave one listener (and its run) behind per run.
    const suspend = new AbortController();
    const onDrain = () => suspend.abort(this.drain.signal.reason);
    if (this.drain.signal.aborted) onDrain();
    else this.drain.signal.addEventListener('abort', onDrain, { once: true });
    let slots: HeldSlots | undefined;
    const onSlotsLost = () => suspend.abort('run-limit slots lost');
    try {
      slots = await this.takeSlots(request, running);
      slots?.lost.addEventListener('abort', onSlotsLost, { once: true });
      const record = await this.execute(request, running, suspend.signal);
      this.count(record);
      this.onEnd?.(request, { record });
      return { record };
    } catch (error) {
      this.onEnd?.(request, { error });
      // Busy elsewhere: thrown, so the queue delivers the request again after its retry delay.
      if (isReplikitError(error, 'E_CONFLICT') || isReplikitError(error, 'E_LEASE_LOST')) {
        if (!isRunStopped(error)) throw error;
      }
      if (!isRunStopped(error)) this.counters.runsFailed++;
      return {
        error: isReplikitError(error)
          ? { code: error.code, message: error.message, ...(error.details ? { details: error.details } : {}) }
          : { code: 'E_INTERNAL', message: error instanceof Error ? error.message : String(error) },
      };
    } finally {
      this.drain.signal.removeEventListener('abort', onDrain);
      slots?.lost.removeEventListener('abort', onSlotsLost);
      await slots?.release();
      this.running.delete(request.requestId);
    }
  }

  /**
   * Takes a slot of every run limit the request's job counts against, waiting while one is full;
   * `undefined` without limits. A drain during the wait rejects with `E_CONFLICT` (the request
   * goes back to the queue, no run started).
   */
  private async takeSlots(request: RunRequest, running: RunningRun): Promise<HeldSlots | undefined> {
    const wants = limitWantsOf(request.job, this.limits);
    if (wants.length === 0) return undefined;
    const slots = await takeLimitSlots(
      { connectionString: this.store.connectionString, application_name: 'replikit-slots' },
      wants,
      {
        signal: this.drain.signal,
        pollMs: this.limits?.pollMs ?? 500,
        onWait: (full) => {
          running.waitingFor = `${full.scope}:${full.key}`;
        },
      },
    );
    delete running.waitingFor;
    running.slots = slots.slots;
    return slots;
  }

  private async execute(request: RunRequest, running: RunningRun, suspend: AbortSignal): Promise<RunRecord> {
    const { rows } = await this.store.query<{ run_id: string | null }>(
      `INSERT INTO replikit.run_requests (request_id, job, kind, worker) VALUES ($1, $2, $3, $4)
       ON CONFLICT (request_id) DO UPDATE SET worker = EXCLUDED.worker
       RETURNING run_id`,
      [request.requestId, request.job.name, request.kind, this.worker],
    );
    let known = request.kind === 'resume' ? request.runId : (rows[0]?.run_id ?? undefined);
    // The run id is noted at the run's first transition, its journal written at its first save a
    // little later: a worker that died in between noted a run that does not exist and did nothing
    // that needs undoing (every step journals before it acts). Such a request starts the run.
    if (known && request.kind === 'run' && !(await this.store.loadRun(known))) known = undefined;
    const unfinished = known ? undefined : (await this.store.findUnfinished(request.job.name))?.runId;
    const resumeId = known ?? unfinished;
    if (resumeId) {
      running.runId = resumeId;
      await this.noteRun(request.requestId, resumeId);
      const rollback = request.kind === 'resume' && request.rollback === true;
      return this.engine.resume(resumeId, { suspend, ...(rollback ? { rollback } : {}) });
    }
    // Note the run's id as soon as it has one (its first transition), so a second delivery finds it.
    const onState = (event: { runId: string; job: string; from: string }) => {
      if (event.job !== request.job.name || event.from !== 'created' || running.runId) return;
      running.runId = event.runId;
      void this.noteRun(request.requestId, event.runId).catch(() => undefined);
    };
    this.engine.on('state', onState);
    try {
      return await this.engine.run(request.job, { suspend });
    } finally {
      this.engine.off('state', onState);
    }
  }

  private async noteRun(requestId: string, runId: string): Promise<void> {
    await this.store.query('UPDATE replikit.run_requests SET run_id = $2 WHERE request_id = $1', [requestId, runId]);
  }

  private count(record: RunRecord): void {
    if (record.state === 'completed') this.counters.runsDone++;
    else this.counters.runsFailed++;
    this.counters.bytesSent += record.stats?.bytesSent ?? 0;
  }
}
