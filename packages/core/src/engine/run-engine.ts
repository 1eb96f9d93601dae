import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { type Context, context } from '@opentelemetry/api';
import { EventEmitter } from 'eventemitter3';
import type { BackupSink } from '../contracts/backup-sink.js';
import type { Hypervisor } from '../contracts/hypervisor.js';
import type { ReplicationCacheProvider } from '../contracts/replication-cache.js';
import type { Transport } from '../contracts/transport.js';
import { AbortError, ConflictError, FailedOverError, InputError, NotFoundError } from '../errors.js';
import type { JobSpec, JobSpecInput } from '../job/job-spec.js';
import { parseJob } from '../job/parse-job.js';
import type { RuleSet } from '../rules/rule.js';
import { type BlockHasher, createNodeHasher } from './block-hasher.js';
import { BufferShelf } from './buffer-shelf.js';
import { type DriverRegistry, defaultDriverRegistry } from './driver-registry.js';
import type { EngineEvents } from './events.js';
import { toJournal, toRunRecord } from './journal-format.js';
import { forecastRun } from './plan/forecast-run.js';
import type { RunForecast } from './plan/run-forecast.js';
import { adviceFor } from './replica-hold.js';
import { RunExecution } from './run-execution.js';
import type { RunJournal } from './run-journal.js';
import { type HeldLease, holdRunLease } from './run-lease.js';
import { emptyStats, type RunRecord } from './run-record.js';
import { isTerminal } from './run-state.js';
import { findUnfinished, type StateStore } from './state-store.js';

/** Options of {@link ReplicationEngine}. */
export interface EngineOptions {
  /** Where runs are journaled (a {@link FileStateStore} for one machine). */
  stateStore: StateStore;
  /**
   * Driver factories by kind.
   * @default defaultDriverRegistry
   */
  drivers?: DriverRegistry;
  /**
   * The block hasher of a run, by algorithm name (`sha256`). The dedup package supplies a faster,
   * multi-threaded one.
   * @default node:crypto on the calling thread
   */
  hasher?: (algorithm: string) => BlockHasher | Promise<BlockHasher>;
  /**
   * The digest of runs whose job does not ask for `strongDigests` (those use `sha256`). The
   * hasher must know it: node:crypto's does not know `xxh128`, the dedup package's pool does.
   * @default 'sha256'
   */
  digest?: string;
  /**
   * The transport of a run; `hasher` is the run's, for the target side's digests. For a replica
   * on this machine, pass `localTransport()` of `@replikit/transport` (the in-process transport);
   * for one behind an agent, its network transport.
   */
  transport: (target: Hypervisor, run: RunRecord, hasher: BlockHasher) => Transport | Promise<Transport>;
  /**
   * The target driver of a job when it is not made from the job's `target` section by `drivers`:
   * a remote target (an agent that hosts the replica, `@replikit/transport`'s
   * `createRemoteTarget`), whose block transport `transport` then returns. Resolving `undefined`
   * falls back to `drivers`.
   * @default the `drivers` registry, for every job
   */
  targetDriver?: (job: JobSpec) => Hypervisor | undefined | Promise<Hypervisor | undefined>;
  /**
   * Where replication caches live; jobs with `options.replicationCache` use it (push jobs only).
   * Without it the option has no effect and every incremental run reads the replica.
   */
  cache?: ReplicationCacheProvider;
  /**
   * Where single-pass runs (`options.singlePass`) record a backup version of exactly the data they
   * replicated, reading the source once. Without it such jobs fail in `prepare` with `E_INPUT`.
   */
  backup?: BackupSink;
  /**
   * Rule sets checked in `validate`.
   * @default defaultRuleSets()
   */
  ruleSets?: readonly RuleSet[];
  /**
   * How often, at least, a transfer makes its progress durable and journals it.
   * @default 1000
   */
  checkpointEveryMs?: number;
  /**
   * The TTL of the lease a run takes on its replica (keyed by the job's name) when the state store
   * has leases (`StateStore.leaseReplica`, the PostgreSQL store): renewed every third of it while
   * the run executes, checked before the commit, and every journal write is fenced with its epoch.
   * A run whose lease is lost is aborted and its writes are refused (`E_LEASE_LOST`). Ignored with
   * a store without leases (the file store).
   * @default 30000
   */
  leaseTtlMs?: number;
  /**
   * How long a run asked to stop (`RunOptions.suspend`) may take to reach its checkpoint. A push
   * transfer reaches one within a segment of each disk; work without checkpoints (a pull, a
   * whole-VM copy, a slow driver call) is aborted when the grace runs out and the run is left as
   * its journal last said, as after a crash.
   * @default 5000
   */
  stopGraceMs?: number;
  /**
   * Source reads kept in flight per disk (1 MiB each, or one block when blocks are larger: then
   * fewer are kept in flight for about the same bytes, but at least two).
   * @default 4
   */
  readAhead?: number;
  /**
   * Keep each hasher the factory made (a pool's threads) for the engine's later runs instead of
   * closing it after every run: for a long-lived process that runs jobs on a schedule. Call
   * {@link ReplicationEngine.close} to release them.
   * @default false
   */
  keepHashers?: boolean;
}

/** Options of {@link ReplicationEngine.run} and {@link ReplicationEngine.resume}. */
export interface RunOptions {
  /** Cancels the run: it is rolled back and ends `cancelled`. */
  signal?: AbortSignal;
  /**
   * Stops the run at its next checkpoint and leaves it unfinished, to be resumed from its journal
   * (`resume`, or the daemon's next start) without sending again what it sent: a transfer journals
   * how far every disk got, a run that has not reached its transfer stops between stages, a run
   * that has transferred everything commits first. The call rejects with `E_ABORTED` whose
   * `details.stopped` is the reason (the signal's `reason` when it is a string, else `stopped`),
   * and the journal says `stopped: { reason, at }` until the run resumes. `signal` wins over it.
   * What `replikit run` and `replikit daemon` do on SIGTERM.
   */
  suspend?: AbortSignal;
  /**
   * The OpenTelemetry context the run's spans (`replikit.disk`, one per disk transfer) are
   * children of: the daemon passes its `replikit.run` span's context.
   * @default the active context (`context.active()` of `@opentelemetry/api`) when the run starts
   */
  traceContext?: Context;
}

/** Options of {@link ReplicationEngine.run}. */
export interface StartOptions extends RunOptions {
  /**
   * Read and send every block of every disk, whatever the tracker and the cache say: each disk is
   * planned `full` with reason `FORCED`.
   * @default false
   */
  full?: boolean;
}

/** Options of {@link ReplicationEngine.resume}. */
export interface ResumeOptions extends RunOptions {
  /** Roll the run back instead of finishing it (only its own writes are ever undone). */
  rollback?: boolean;
  /**
   * End the run without finishing or rolling it back: for a run that can do neither (its base
   * restore point is gone, its replica is held by another run). Another run's replica state is
   * never touched; the run's own hold, pending writes and snapshot are dropped.
   */
  abandon?: boolean;
}

function newRunId(job: string): string {
  const time = new Date()
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z');
  return `${job}-${time}-${randomBytes(3).toString('hex')}`;
}

/**
 * Runs replication jobs: each run goes validate ─► prepare ─► snapshot ─► plan ─► transfer ─►
 * commit ─► cleanup, journaled at every step so that a process that dies can `resume` it (or roll
 * it back). A replica is always either its previous complete version or its new complete
 * version.
 *
 * @example
 * ```ts
 * import { localTransport } from '@replikit/transport';
 *
 * const engine = new ReplicationEngine({ stateStore: new FileStateStore('.replikit'), transport: localTransport() });
 * engine.on('progress', (p) => console.log(p.stats.bytesSent));
 * const run = await engine.run(job);
 * ```
 */
export class ReplicationEngine extends EventEmitter<EngineEvents> {
  private readonly options: Required<Omit<EngineOptions, 'ruleSets' | 'cache' | 'backup' | 'targetDriver'>> &
    Pick<EngineOptions, 'ruleSets' | 'cache' | 'backup' | 'targetDriver'>;
  private readonly active = new Map<string, AbortController>();
  private readonly kept = new Map<string, Promise<BlockHasher>>();
  /** Read buffers kept between disks and runs, per hasher. */
  private readonly buffers = new BufferShelf();

  constructor(options: EngineOptions) {
    super();
    if (typeof options?.transport !== 'function') {
      throw new InputError(
        "the engine needs a transport: pass `transport: localTransport()` from '@replikit/transport' for a replica on this machine",
      );
    }
    this.options = {
      drivers: defaultDriverRegistry,
      hasher: createNodeHasher,
      digest: 'sha256',
      checkpointEveryMs: 1000,
      stopGraceMs: 5000,
      leaseTtlMs: 30_000,
      readAhead: 4,
      keepHashers: false,
      ...options,
    };
  }

  /** Releases the hashers kept between runs (`keepHashers`). The engine can still run afterwards. */
  async close(): Promise<void> {
    const kept = [...this.kept.values()];
    this.kept.clear();
    for (const hasher of await Promise.allSettled(kept)) {
      if (hasher.status === 'fulfilled') await hasher.value.close?.();
    }
  }

  /** The hasher of a run: a new one, or the one kept for the algorithm. */
  private async hasherFor(algorithm: string): Promise<BlockHasher> {
    if (!this.options.keepHashers) return this.options.hasher(algorithm);
    let hasher = this.kept.get(algorithm);
    if (!hasher) {
      hasher = Promise.resolve(this.options.hasher(algorithm));
      hasher.catch(() => this.kept.delete(algorithm));
      this.kept.set(algorithm, hasher);
    }
    return hasher;
  }

  /** The state store runs are journaled in. */
  get store(): StateStore {
    return this.options.stateStore;
  }

  /**
   * Runs a job once. Resolves with the completed run's record.
   *
   * @throws the run's error (a {@link ReplikitError}): `E_JOB` when a side's fields do not match
   * its driver's options schema, `E_RULE` when the job breaks a rule,
   * `E_CONFLICT` when a run of the job is unfinished or running, `E_ABORTED` when cancelled, …
   * The failed run is rolled back and its record stays in the store.
   */
  async run(job: JobSpec | JobSpecInput, options: StartOptions = {}): Promise<RunRecord> {
    const spec = parseJob(job, 'job');
    // A misspelt driver field stops here, before a run is journaled.
    this.options.drivers.checkJob(spec);
    const lifecycle = (await this.store.loadJob(spec.name))?.lifecycle;
    if (lifecycle) {
      throw new FailedOverError(
        lifecycle === 'retired'
          ? `job '${spec.name}' is retired by a permanent failover (its replica is the production VM now); it never runs again`
          : `the replica of job '${spec.name}' is ${lifecycle}; no run writes it until 'replikit failover undo ${spec.name}'`,
        { details: { state: lifecycle } },
      );
    }
    const unfinished = await findUnfinished(this.store, spec.name);
    if (unfinished && !this.active.has(unfinished.runId)) {
      const advice = adviceFor(unfinished.runId, unfinished.pid, unfinished.host, this.store.location);
      const what = advice.startsWith('it is running now')
        ? 'is unfinished'
        : `did not finish (stopped in '${unfinished.state}')`;
      throw new ConflictError(`run ${unfinished.runId} of job '${spec.name}' ${what}; ${advice}`, {
        details: { runId: unfinished.runId, state: unfinished.state, pid: unfinished.pid },
      });
    }
    const now = new Date().toISOString();
    const hasher = await this.hasherFor(spec.options.strongDigests ? 'sha256' : this.options.digest);
    const record: RunJournal = {
      version: 2,
      runId: newRunId(spec.name),
      job: spec,
      state: 'created',
      startedAt: now,
      updatedAt: now,
      pid: process.pid,
      host: hostname(),
      history: [{ state: 'created', at: now }],
      blockSize: spec.blockSize,
      digest: hasher.algorithm,
      disks: [],
      stats: emptyStats(),
      warnings: [],
      ...(options.full ? { forced: true } : {}),
      stages: {},
    };
    return this.execute(record, hasher, options, 'run');
  }

  /**
   * Continues a run that stopped (its process died, or its cleanup failed) from its last journaled
   * state and checkpoint, or rolls it back (`rollback: true`) to the replica's last restore point.
   * A run that already ended is returned as it is.
   *
   * A rollback only ever undoes the run's own writes: when the replica is held by another run or
   * has a restore point newer than the run's base, nothing is reverted and the run ends `failed`
   * with a warning. `abandon: true` ends the run without either (see {@link ResumeOptions}).
   *
   * @throws {@link NotFoundError} for an unknown run id; {@link ConflictError} when a live process
   * still drives it, or when the replica is held by another run; what the block store's `check`
   * throws (a wrong key) for a single-pass run, which then stays unfinished.
   */
  async resume(runId: string, options: ResumeOptions = {}): Promise<RunRecord> {
    const stored = await this.store.loadRun(runId);
    if (!stored) throw new NotFoundError(`there is no run '${runId}'; \`replikit runs\` lists them`);
    // A journal of an earlier version (one flat record) resumes as a journal of this one.
    const record = toJournal(stored);
    if (isTerminal(record.state)) return toRunRecord(record);
    const mode = options.abandon ? 'abandon' : options.rollback ? 'rollback' : 'resume';
    // A block store that refuses its key refuses the resume, and the run stays resumable (run in
    // the stages, the refusal would fail the run and roll back what it had sent).
    if (mode === 'resume' && record.job.options.singlePass) await this.options.backup?.check?.(options);
    const hasher = await this.hasherFor(record.digest);
    return this.execute(record, hasher, options, mode);
  }

  /** Cancels a run driven by this engine. Returns false when it is not running here. */
  cancel(runId: string, reason = 'cancelled by the user'): boolean {
    const controller = this.active.get(runId);
    if (!controller) return false;
    controller.abort(new AbortError(reason));
    return true;
  }

  /**
   * Tells what the next run of `job` would do, without doing any of it: it takes no snapshot, no
   * lock, and writes nothing (state folder, source, replica). Per disk: the mode and its reason,
   * the blocks and bytes to read and send (exact where the source driver keeps a record of
   * pending changes, else estimated from the job's past runs), an ETA from the throughput past
   * runs measured, the restore points the run would create and prune, and what would stop it.
   *
   * @example
   * ```ts
   * const next = await engine.plan(job);
   * if (!next.canRun) console.error(next.blockers.map((b) => b.message).join('\n'));
   * ```
   */
  async plan(job: JobSpec | JobSpecInput, options: RunOptions = {}): Promise<RunForecast> {
    const spec = parseJob(job, 'job');
    return forecastRun(
      {
        store: this.store,
        drivers: this.options.drivers,
        ...(this.options.targetDriver ? { targetDriver: this.options.targetDriver } : {}),
        ...(this.options.cache ? { cache: this.options.cache } : {}),
        ...(this.options.backup ? { backup: this.options.backup } : {}),
        ...(this.options.ruleSets ? { ruleSets: this.options.ruleSets } : {}),
        digest: spec.options.strongDigests ? 'sha256' : this.options.digest,
      },
      spec,
      options,
    );
  }

  /** The journaled runs, oldest first. */
  async listRuns(): Promise<RunRecord[]> {
    return (await this.store.listRuns()).map(toRunRecord);
  }

  private async execute(
    record: RunJournal,
    hasher: BlockHasher,
    options: RunOptions,
    mode: 'run' | 'resume' | 'rollback' | 'abandon',
  ): Promise<RunRecord> {
    const release = await this.store.lockJob(record.job.name, record.runId);
    const controller = new AbortController();
    let held: HeldLease | undefined;
    try {
      held = await holdRunLease(this.store, record.job.name, this.options.leaseTtlMs, (error) =>
        controller.abort(error),
      );
    } catch (error) {
      await release();
      throw error;
    }
    this.active.set(record.runId, controller);
    const signal = options.signal ? AbortSignal.any([options.signal, controller.signal]) : controller.signal;
    try {
      const execution = new RunExecution(
        {
          store: this.store,
          drivers: this.options.drivers,
          events: this,
          hasher,
          transport: this.options.transport,
          ...(this.options.targetDriver ? { targetDriver: this.options.targetDriver } : {}),
          ...(this.options.cache ? { cache: this.options.cache } : {}),
          ...(this.options.backup ? { backup: this.options.backup } : {}),
          ...(this.options.ruleSets ? { ruleSets: this.options.ruleSets } : {}),
          checkpointEveryMs: this.options.checkpointEveryMs,
          stopGraceMs: this.options.stopGraceMs,
          readAhead: this.options.readAhead,
          buffers: this.buffers,
          ...(this.store.location === undefined ? {} : { stateDir: this.store.location }),
          ...(held ? { lease: held.lease, saveOptions: held.saveOptions, fence: held.fence } : {}),
        },
        record,
        signal,
        options.suspend,
        options.traceContext ?? context.active(),
      );
      return toRunRecord(await execution.drive({ rollback: mode === 'rollback', abandon: mode === 'abandon' }));
    } finally {
      this.active.delete(record.runId);
      if (!this.options.keepHashers) await hasher.close?.();
      await held?.end().catch(() => undefined);
      await release();
    }
  }
}
