import { EventEmitter } from 'eventemitter3';
import { InputError, NotFoundError } from '../errors.js';
import type { JobSpec, JobSpecInput } from '../job/job-spec.js';
import { parseJob } from '../job/parse-job.js';
import { type Clock, systemClock } from './clock.js';
import type { DaemonEvents } from './daemon-events.js';
import { type DaemonEngine, JobLoop, type ScheduleStore } from './job-loop.js';
import type { WindowOption } from './schedule-options.js';
import type { ScheduleState } from './schedule-state.js';

/** How long the daemon waits before it starts a failed job loop again: 30 s. */
export const LOOP_RESTART_MS = 30_000;

/** Options of {@link Daemon}. */
export interface DaemonOptions {
  /** Runs the jobs; its store keeps the schedule states (a {@link FileStateStore} has the methods). */
  engine: DaemonEngine;
  /** The jobs. A job without `options.schedule` is only resumed and watched (RPO), never started. */
  jobs: ReadonlyArray<JobSpec | JobSpecInput>;
  /**
   * Where the time comes from.
   * @default systemClock
   */
  clock?: Clock;
  /**
   * The jitter source of retry delays, in [0, 1).
   * @default Math.random
   */
  random?: () => number;
  /**
   * Maintenance windows of the jobs that set no `options.windows` (same shape: `{ cron, duration,
   * timezone? }`): transfers run only while one is open.
   * @default none: always open
   */
  windows?: readonly WindowOption[];
  /**
   * How often the daemon reads the pause and resume requests of the store
   * (`replikit daemon pause|resume`, `saveScheduleRequest`), in milliseconds of real time; `0`
   * reads them only at start.
   * @default 1000
   */
  requestPollMs?: number;
}

function scheduleStoreOf(engine: DaemonEngine): ScheduleStore {
  const store = engine.store;
  if (!store.saveSchedule || !store.loadSchedule || !store.listSchedules) {
    throw new InputError(
      'the daemon needs a state store that keeps schedule states (saveSchedule, loadSchedule, listSchedules), such as FileStateStore',
    );
  }
  return store as ScheduleStore;
}

/**
 * Runs jobs on their schedules (`options.schedule`) through an engine: one run of a job at a
 * time, the overlap, catch-up and retry policies of each job, its maintenance windows, an
 * unfinished run resumed at start, and each job's schedule state and RPO kept durable in the state
 * store. {@link stop} stops the running runs at a checkpoint (resumable) and ends every wait.
 *
 * @example
 * ```ts
 * const daemon = new Daemon({ engine, jobs: [job] });
 * daemon.on('run-end', (e) => console.log(e.job, e.outcome));
 * await daemon.start();
 * process.once('SIGTERM', () => void daemon.stop());
 * await daemon.done;
 * ```
 */
export class Daemon extends EventEmitter<DaemonEvents> {
  private readonly loops = new Map<string, JobLoop>();
  private readonly stopper = new AbortController();
  private running: Promise<void> | undefined;
  private readonly clock: Clock;
  private readonly requestPollMs: number;
  private poller: NodeJS.Timeout | undefined;

  constructor(options: DaemonOptions) {
    super();
    const store = scheduleStoreOf(options.engine);
    this.clock = options.clock ?? systemClock;
    this.requestPollMs = options.requestPollMs ?? 1000;
    const context = {
      engine: options.engine,
      store,
      clock: this.clock,
      random: options.random ?? Math.random,
      events: this,
      stop: this.stopper.signal,
      ...(options.windows ? { windows: options.windows } : {}),
    };
    for (const input of options.jobs) {
      const job = parseJob(input, 'job');
      if (this.loops.has(job.name)) throw new InputError(`two jobs are named '${job.name}'; a job name must be unique`);
      this.loops.set(job.name, new JobLoop(job, context));
    }
  }

  /** Starts every job's loop. Resolves once started; {@link done} resolves when they have all stopped. */
  async start(): Promise<void> {
    if (this.running) throw new InputError('the daemon is already started');
    this.running = Promise.all([...this.loops.values()].map((loop) => this.keep(loop))).then(() => undefined);
    if (this.requestPollMs > 0) {
      let polling = false;
      this.poller = setInterval(() => {
        if (polling || this.stopper.signal.aborted) return;
        polling = true;
        void this.applyRequests().finally(() => {
          polling = false;
        });
      }, this.requestPollMs);
      this.poller.unref();
    }
  }

  /**
   * Applies the pause and resume requests saved in the store since they were last read (what the
   * daemon does every `requestPollMs`, and each job at start). A request that cannot be read is
   * tried again at the next poll.
   */
  async applyRequests(): Promise<void> {
    for (const loop of this.loops.values()) await loop.applyRequest().catch(() => undefined);
  }

  /**
   * Runs a job's loop until the daemon stops. A loop that fails (its schedule state could not be
   * saved, say) is reported and started again after {@link LOOP_RESTART_MS}, from its saved state.
   */
  private async keep(loop: JobLoop): Promise<void> {
    const stop = this.stopper.signal;
    while (!stop.aborted) {
      try {
        await loop.loop();
      } catch (error) {
        this.emit('error', { job: loop.job.name, error });
        await this.clock.sleepUntil(this.clock.now() + LOOP_RESTART_MS, stop).catch(() => undefined);
      }
    }
  }

  /** Resolves when every job's loop has stopped (after {@link stop}, or when each failed). */
  get done(): Promise<void> {
    return this.running ?? Promise.resolve();
  }

  /**
   * Stops every running run at a checkpoint (left unfinished, resumed at the next start), ends
   * every wait, and resolves once all loops stopped.
   */
  async stop(): Promise<void> {
    clearInterval(this.poller);
    this.stopper.abort();
    await this.done;
  }

  /** The schedule state of every job, as each loop last saved it. */
  states(): ScheduleState[] {
    return [...this.loops.values()].map((loop) => loop.snapshot);
  }

  /** Pauses a job: no run starts until {@link resumeJob}. Persisted in its schedule state. */
  async pauseJob(name: string): Promise<void> {
    await this.loopOf(name).pause();
  }

  /** Lifts a pause or a hold (a failure that needed a decision). */
  async resumeJob(name: string): Promise<void> {
    await this.loopOf(name).resume();
  }

  private loopOf(name: string): JobLoop {
    const loop = this.loops.get(name);
    if (!loop) throw new NotFoundError(`the daemon runs no job named '${name}'`);
    return loop;
  }
}
