import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import {
  Daemon,
  type DaemonOptions,
  type JobSpec,
  type JobSpecInput,
  type ReplicaLease,
  type ReplicationEngine,
  type RunRecord,
} from '@replikit/core';
import type PgBoss from 'pg-boss';
import type { PostgresStateStore } from '../postgres-state-store.js';
import { QueueEngine } from './queue-engine.js';
import type { RunLimits } from './run-limits.js';
import { openRunQueue, type RunQueueOptions, type RunRequest } from './run-queue.js';
import { RunWorker } from './run-worker.js';

/** The lease the scheduling worker holds (a replica lease on this reserved name). */
export const SCHEDULER_LEASE = 'replikit:scheduler';

/** Options of {@link ClusterWorker}. */
export interface ClusterWorkerOptions {
  /** The engine that carries out runs; its state store must be `store`. */
  engine: ReplicationEngine;
  /** The shared store. */
  store: PostgresStateStore;
  /** The jobs of the cluster (every worker is given the same list). */
  jobs: ReadonlyArray<JobSpec | JobSpecInput>;
  /** Daemon options of the scheduler (windows, clock, request polling). */
  daemon?: Omit<DaemonOptions, 'engine' | 'jobs'>;
  /** Queue options ({@link RunQueueOptions}, without the connection string). */
  queue?: Omit<RunQueueOptions, 'connectionString'>;
  /**
   * Runs this worker carries out at once.
   * @default 1
   */
  concurrency?: number;
  /**
   * Limits on the runs at once across all workers, per source host and per target
   * ({@link RunLimits}); give every worker the same. A run waits on its worker for a free slot.
   * @default no limit
   */
  limits?: RunLimits;
  /**
   * TTL of the scheduler lease and of the worker's heartbeat row, in milliseconds: a scheduler
   * that stops renewing is replaced after it.
   * @default 15000
   */
  leaseTtlMs?: number;
  /**
   * This worker's name, as `replikit workers` shows it.
   * @default `<host>:<pid>:<random>`
   */
  name?: string;
  /**
   * Called when this worker ends carrying out a request: with the run's record, or with the error
   * (one that sends the request back to the queue, such as `E_LEASE_LOST`, included).
   */
  onRunEnd?: (request: RunRequest, outcome: { record?: RunRecord; error?: unknown }) => void;
  /**
   * Called when this worker starts scheduling (with its new daemon, before the daemon starts, so
   * no event of it is missed) and when it stops (with why: drained, or the lease's heartbeat
   * failed and another worker may take over).
   */
  onSchedulerChange?: (change: SchedulerChange) => void;
}

/** What {@link ClusterWorkerOptions.onSchedulerChange} is told. */
export interface SchedulerChange {
  /** True when this worker now schedules the jobs, false when it stopped. */
  scheduling: boolean;
  /** The scheduler's daemon, when `scheduling`. */
  daemon?: Daemon;
  /** Why it stopped: `stopped` (drained) or the heartbeat's error message. */
  reason?: string;
  /** The scheduler lease's epoch. */
  epoch?: number;
}

/**
 * One worker of a cluster on PostgreSQL. Every worker takes run requests from the queue
 * ({@link RunWorker}); the one that holds the scheduler lease also runs the {@link Daemon}
 * whose job loops send those requests ({@link QueueEngine}). When the scheduler dies or stops
 * renewing, another worker takes the lease and its daemon goes on from the schedule states and
 * journals in the store. The worker's row in `replikit.workers` is renewed with its runs and
 * counters.
 *
 * @example
 * ```ts
 * const worker = await ClusterWorker.start({ engine, store, jobs });
 * process.once('SIGTERM', () => void worker.stop());
 * ```
 */
export class ClusterWorker {
  /** The worker's name, as `replikit workers` shows it. */
  readonly name: string;
  private daemon: Daemon | undefined;
  private lease: ReplicaLease | undefined;
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> = Promise.resolve();
  private stopped = false;

  private constructor(
    private readonly options: ClusterWorkerOptions,
    private readonly boss: PgBoss,
    /** The worker's run worker (its running runs and counters). */
    readonly runs: RunWorker,
  ) {
    this.name = options.name ?? `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
  }

  /** Starts a worker: its queue, its run worker, and its bid for the scheduler lease. */
  static async start(options: ClusterWorkerOptions): Promise<ClusterWorker> {
    const boss = await openRunQueue({ connectionString: options.store.connectionString, ...options.queue });
    const name = options.name ?? `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
    let runs: RunWorker;
    try {
      runs = new RunWorker(options.engine, options.store, boss, name, options.onRunEnd, options.limits);
    } catch (error) {
      await boss.stop({ graceful: false, wait: true }).catch(() => undefined);
      throw error;
    }
    const worker = new ClusterWorker({ ...options, name }, boss, runs);
    await options.store.query(
      `INSERT INTO replikit.workers (worker, host, pid, started_at, heartbeat_at) VALUES ($1, $2, $3, now(), now())
       ON CONFLICT (worker) DO UPDATE SET heartbeat_at = now(), stopped_at = NULL`,
      [name, hostname(), process.pid],
    );
    await runs.start(options.concurrency ?? 1);
    await worker.tick();
    const every = Math.max(100, Math.floor((options.leaseTtlMs ?? 15_000) / 3));
    worker.timer = setInterval(() => {
      worker.ticking = worker.ticking.then(() => worker.tick()).catch(() => undefined);
    }, every);
    return worker;
  }

  /** True while this worker runs the scheduler. */
  get isScheduler(): boolean {
    return this.daemon !== undefined;
  }

  /** The scheduler's daemon while this worker runs it (for its events). */
  get scheduler(): Daemon | undefined {
    return this.daemon;
  }

  /**
   * Drains the worker (SIGTERM): the scheduler stops (its lease released, another worker takes
   * over), running runs stop at a checkpoint (unfinished, resumed by another worker), the queue
   * stops; the worker's row is marked stopped.
   */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.timer);
    await this.ticking;
    await this.stopScheduler('stopped');
    await this.runs.stop();
    await this.boss.stop({ graceful: true, wait: true, timeout: 10_000 }).catch(() => undefined);
    await this.beat(true).catch(() => undefined);
  }

  /** One turn: renew (or bid for) the scheduler lease, and the worker's row. */
  private async tick(): Promise<void> {
    if (this.stopped) return;
    const { store, leaseTtlMs = 15_000 } = this.options;
    if (this.lease) {
      try {
        await this.lease.heartbeat();
      } catch (error) {
        await this.stopScheduler(error instanceof Error ? error.message : String(error));
      }
    } else {
      try {
        this.lease = await store.leaseReplica(SCHEDULER_LEASE, { ttlMs: leaseTtlMs, owner: this.name });
      } catch {
        this.lease = undefined;
      }
      if (this.lease) {
        this.daemon = new Daemon({
          ...this.options.daemon,
          engine: new QueueEngine(store, this.boss),
          jobs: this.options.jobs,
        });
        this.options.onSchedulerChange?.({ scheduling: true, daemon: this.daemon, epoch: this.lease.epoch });
        await this.daemon.start();
      }
    }
    await this.beat(false).catch(() => undefined);
  }

  private async stopScheduler(reason: string): Promise<void> {
    const daemon = this.daemon;
    const lease = this.lease;
    this.daemon = undefined;
    this.lease = undefined;
    if (lease) this.options.onSchedulerChange?.({ scheduling: false, reason, epoch: lease.epoch });
    await daemon?.stop().catch(() => undefined);
    await lease?.release().catch(() => undefined);
  }

  private async beat(stopped: boolean): Promise<void> {
    const { runsDone, runsFailed, bytesSent } = this.runs.counters;
    await this.options.store.query(
      `UPDATE replikit.workers SET heartbeat_at = now(), leader = $2, running = $3, runs_done = $4,
         runs_failed = $5, bytes_sent = $6, stopped_at = CASE WHEN $7 THEN now() ELSE NULL END
       WHERE worker = $1`,
      [
        this.name,
        this.daemon !== undefined,
        JSON.stringify([...this.runs.running.values()]),
        runsDone,
        runsFailed,
        bytesSent,
        stopped,
      ],
    );
  }
}
