import type { PostgresStateStore } from '../postgres-state-store.js';
import type { RunningRun, WorkerCounters } from './run-worker.js';

/** A worker as `replikit.workers` records it. */
export interface WorkerRow {
  /** The worker's name (`<host>:<pid>:<random>` unless named). */
  worker: string;
  /** The host it runs on. */
  host: string;
  /** Its process id. */
  pid: number;
  /** When it started. */
  startedAt: string;
  /** Its last heartbeat, by the database's clock. */
  heartbeatAt: string;
  /** Seconds since its last heartbeat, by the database's clock. */
  heartbeatAgeSeconds: number;
  /** Whether it runs the scheduler. */
  scheduler: boolean;
  /** The runs it carries out now. */
  running: RunningRun[];
  /** Runs it completed (see {@link WorkerCounters}). */
  runsDone: number;
  /** Runs that failed or were cancelled on it. */
  runsFailed: number;
  /** Bytes its runs sent. */
  bytesSent: number;
  /** When it stopped (drained), if it did. */
  stoppedAt?: string;
}

/** Every worker the store has seen, newest heartbeat first. */
export async function listWorkers(store: PostgresStateStore): Promise<WorkerRow[]> {
  const { rows } = await store.query<{
    worker: string;
    host: string;
    pid: number;
    started_at: Date;
    heartbeat_at: Date;
    age: number;
    leader: boolean;
    running: RunningRun[];
    runs_done: number;
    runs_failed: number;
    bytes_sent: string;
    stopped_at: Date | null;
  }>(
    `SELECT worker, host, pid, started_at, heartbeat_at, leader, running, runs_done, runs_failed, bytes_sent,
            stopped_at, EXTRACT(EPOCH FROM (now() - heartbeat_at))::float8 AS age
     FROM replikit.workers ORDER BY heartbeat_at DESC`,
    [],
  );
  return rows.map((r) => ({
    worker: r.worker,
    host: r.host,
    pid: r.pid,
    startedAt: r.started_at.toISOString(),
    heartbeatAt: r.heartbeat_at.toISOString(),
    heartbeatAgeSeconds: r.age,
    scheduler: r.leader,
    running: r.running,
    runsDone: r.runs_done,
    runsFailed: r.runs_failed,
    bytesSent: Number(r.bytes_sent),
    ...(r.stopped_at ? { stoppedAt: r.stopped_at.toISOString() } : {}),
  }));
}
