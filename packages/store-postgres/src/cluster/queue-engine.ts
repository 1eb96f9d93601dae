import { randomUUID } from 'node:crypto';
import {
  AbortError,
  type DaemonEngine,
  type JobSpec,
  ReplikitError,
  type RunRecord,
  type StateStore,
} from '@replikit/core';
import type PgBoss from 'pg-boss';
import type { PostgresStateStore } from '../postgres-state-store.js';
import { type openRunQueue, RUN_QUEUE, type RunAnswer, type RunRequest } from './run-queue.js';

/**
 * The engine the scheduling worker's `Daemon` (from `@replikit/core`) drives: each run or resume becomes a request
 * on the run queue, carried out by any worker ({@link RunWorker}); the call resolves with the
 * run's record once a worker answered. So the job loops (slots, overlap, catch-up, retries,
 * windows) are those of one machine, and the runs are spread over every worker.
 */
export class QueueEngine implements DaemonEngine {
  /**
   * @param store - the shared store (the schedule states and journals).
   * @param boss - a started pg-boss with the run queue ({@link openRunQueue}).
   * @param pollMs - how often the answer of a request is looked for.
   */
  constructor(
    readonly store: PostgresStateStore & StateStore,
    private readonly boss: PgBoss,
    private readonly pollMs = 250,
  ) {}

  /** Sends a request to run `job` once; resolves with the run's record when a worker answered. */
  run(job: JobSpec, options: { suspend?: AbortSignal } = {}): Promise<RunRecord> {
    return this.request({ kind: 'run', requestId: randomUUID(), job }, options.suspend);
  }

  /** Sends a request to resume (or roll back) run `runId`; resolves with its record when a worker answered. */
  async resume(runId: string, options: { suspend?: AbortSignal; rollback?: boolean } = {}): Promise<RunRecord> {
    const journal = await this.store.loadRun(runId);
    if (!journal) throw new ReplikitError('E_NOT_FOUND', `there is no run '${runId}'`);
    const request: RunRequest = {
      kind: 'resume',
      requestId: randomUUID(),
      job: journal.job,
      runId,
      ...(options.rollback ? { rollback: true } : {}),
    };
    return this.request(request, options.suspend);
  }

  /**
   * Sends `request` (its id is the queue job's id, so a send repeated after a lost answer is one
   * job) and waits for its answer. When `suspend` fires first (the scheduling worker stops), it
   * stops waiting: the run goes on where it is, and is found unfinished by whoever schedules next.
   */
  private async request(request: RunRequest, suspend?: AbortSignal): Promise<RunRecord> {
    const sent = await this.boss.send(RUN_QUEUE, request, { id: request.requestId, singletonKey: request.job.name });
    if (sent === null && !(await this.boss.getJobById(RUN_QUEUE, request.requestId, { includeArchive: true }))) {
      // Never waits for a request the queue did not keep.
      throw new ReplikitError('E_CONFLICT', `the run queue refused the request to run job '${request.job.name}'`);
    }
    for (;;) {
      if (suspend?.aborted) {
        const runId = request.kind === 'resume' ? request.runId : await this.runIdOf(request.requestId);
        throw new AbortError(`the scheduler stopped waiting for run ${runId ?? 'of ' + request.job.name}`, {
          details: { ...(runId ? { runId } : {}), stopped: 'stopped' },
        });
      }
      const found = await this.boss.getJobById<RunRequest>(RUN_QUEUE, request.requestId, { includeArchive: true });
      if (found && (found.state === 'completed' || found.state === 'failed' || found.state === 'cancelled')) {
        const answer = (found.output ?? {}) as RunAnswer;
        if (answer.record) return answer.record;
        const error = answer.error ?? {
          code: 'E_INTERNAL',
          message: `run request ${request.requestId} ${found.state}`,
        };
        throw new ReplikitError(error.code as never, error.message, { details: error.details ?? {} });
      }
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          suspend?.removeEventListener('abort', done);
          resolve();
        };
        const timer = setTimeout(done, this.pollMs);
        suspend?.addEventListener('abort', done, { once: true });
      });
    }
  }

  private async runIdOf(requestId: string): Promise<string | undefined> {
    const { rows } = await this.store.query<{ run_id: string | null }>(
      'SELECT run_id FROM replikit.run_requests WHERE request_id = $1',
      [requestId],
    );
    return rows[0]?.run_id ?? undefined;
  }
}
