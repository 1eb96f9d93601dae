import type { JobSpec, RunRecord } from '@replikit/core';
import pg from 'pg';
import PgBoss from 'pg-boss';
import { QUEUE_CREATION_LOCK } from '../advisory-keys.js';

/** The pg-boss queue that carries run requests from the scheduling worker to any worker. */
export const RUN_QUEUE = 'replikit-runs';

/** The PostgreSQL schema pg-boss keeps its tables in (beside replikit's own `replikit`). */
export const QUEUE_SCHEMA = 'replikit_queue';

/** A request to run a job once, or to resume (or roll back) one of its runs. */
export type RunRequest = StartRequest | ResumeRequest;

/** A request to run a job once. */
export interface StartRequest {
  /** Always `run`. */
  kind: 'run';
  /** The request's id (a UUID), also the queue job's id. */
  requestId: string;
  /** The job. */
  job: JobSpec;
}

/** A request to resume (or roll back) a run of a job. */
export interface ResumeRequest {
  /** Always `resume`. */
  kind: 'resume';
  /** The request's id (a UUID), also the queue job's id. */
  requestId: string;
  /** The run's job. */
  job: JobSpec;
  /** The run to resume. */
  runId: string;
  /** Roll the run back instead of finishing it. */
  rollback?: boolean;
}

/** What a worker answers a request with (the queue job's output). */
export interface RunAnswer {
  /** The run's record, when it ended (completed, failed or cancelled). */
  record?: RunRecord;
  /** The run's error, when it rejected. */
  error?: RunAnswerError;
}

/** The error of a {@link RunAnswer}: a `ReplikitError`'s code, message and details. */
export interface RunAnswerError {
  /** The error code (`E_…`). */
  code: string;
  /** What happened. */
  message: string;
  /** The error's details. */
  details?: Record<string, unknown>;
}

/** Options of {@link openRunQueue}. */
export interface RunQueueOptions {
  /** The database (the same as the state store's). */
  connectionString: string;
  /**
   * How long a delivered request may stay active before the queue hands it to another worker,
   * in seconds: past it, a worker that died mid-run is replaced (the run lease decides who
   * writes). A live worker's run that outlasts it is delivered again and that delivery waits for
   * the run (its job lock) to end.
   * @default 900
   */
  expireInSeconds?: number;
  /**
   * Delay before a request that met a busy job or replica (`E_CONFLICT`, `E_LEASE_LOST`) is
   * delivered again, in seconds.
   * @default 2
   */
  retryDelaySeconds?: number;
  /**
   * How often pg-boss looks for expired requests (those of dead workers) and does its upkeep, in
   * seconds (≥ 1): a dead worker's request is delivered again at most this long after it expired.
   * @default 30
   */
  superviseIntervalSeconds?: number;
}

/** A started pg-boss with the run queue created. */
export async function openRunQueue(options: RunQueueOptions): Promise<PgBoss> {
  const boss = new PgBoss({
    connectionString: options.connectionString,
    schema: QUEUE_SCHEMA,
    application_name: 'replikit-queue',
    max: 4,
    maintenanceIntervalSeconds: options.superviseIntervalSeconds ?? 30,
  });
  // A broken connection is reported by the next call; the event must not crash the process.
  boss.on('error', () => undefined);
  await boss.start();
  try {
    await serialised(options.connectionString, () =>
      boss.createQueue(RUN_QUEUE, {
        name: RUN_QUEUE,
        policy: 'standard',
        retryLimit: 1_000_000,
        retryDelay: options.retryDelaySeconds ?? 2,
        expireInSeconds: options.expireInSeconds ?? 900,
      }),
    );
  } catch (error) {
    await boss.stop({ graceful: false, wait: true }).catch(() => undefined);
    throw error;
  }
  return boss;
}

/**
 * Runs `create` while holding {@link QUEUE_CREATION_LOCK} on a connection of its own. pg-boss's
 * `createQueue` inserts the queue's row, then creates and attaches its partition with a foreign
 * key to the queue table in one transaction; two sessions creating the same queue at once (workers
 * starting together on a new database) each wait for the other and PostgreSQL aborts one with
 * "deadlock detected". Under the lock the second finds the queue made and does nothing.
 */
async function serialised(connectionString: string, create: () => Promise<void>): Promise<void> {
  const client = new pg.Client({ connectionString, application_name: 'replikit-queue' });
  // A connection lost while the lock is held ends the lock too; the error must not crash the process.
  client.on('error', () => undefined);
  await client.connect();
  try {
    await client.query('SELECT pg_advisory_lock($1, $2)', QUEUE_CREATION_LOCK);
    await create();
  } finally {
    // Ending the session releases the lock in any case.
    await client.end().catch(() => undefined);
  }
}
