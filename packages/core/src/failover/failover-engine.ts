import { randomBytes } from 'node:crypto';
import { type DriverRegistry, defaultDriverRegistry } from '../engine/driver-registry.js';
import type { ReplicationEngine } from '../engine/run-engine.js';
import type { StateStore } from '../engine/state-store.js';
import { FailedOverError, isReplikitError } from '../errors.js';
import type { JobSpec } from '../job/job-spec.js';
import { type FailbackOptions, type FailbackResult, runFailback } from './failback.js';
import {
  type FailoverKind,
  type FailoverOperation,
  type FailoverRecord,
  freshFailoverRecord,
} from './failover-record.js';
import type { FailoverStore } from './failover-store.js';
import { createOperationContext, type FailoverFaultHook, type OperationContext } from './operation-context.js';
import { type PlannedFailoverOptions, type PlannedFailoverResult, runPlannedFailover } from './planned-failover.js';
import {
  runCommit,
  runPermanent,
  runUndo,
  runUnplannedFailover,
  type UnplannedFailoverOptions,
} from './promote-ops.js';
import { type ReverseOptions, type ReversePassStats, type ReverseResult, runReverse } from './reverse-replication.js';
import { runTestFailover, type TestFailoverOptions, type TestFailoverResult } from './test-failover.js';

/** Options of {@link FailoverEngine}. */
export interface FailoverEngineOptions {
  /** The run state store (job records: the replica, the lifecycle; job locks). */
  stateStore: StateStore;
  /** Where operations are journaled (a `FileFailoverStore` in the same state folder). */
  failoverStore: FailoverStore;
  /**
   * Driver factories by kind.
   * @default defaultDriverRegistry
   */
  drivers?: DriverRegistry;
  /** The replication engine; planned failover needs it (it runs the job twice). */
  replication?: ReplicationEngine;
  /**
   * Called after each durable step (`<kind>:<step>`). For crash tests only.
   * @internal
   */
  faultHook?: FailoverFaultHook;
}

const MAX_HISTORY = 50;

/** The blocks a reverse replication or a failback sent (all passes), from its result. */
function sentOf(result: unknown): FailoverRecord['history'][number]['sent'] {
  const r = result as { reverse?: ReversePassStats; passes?: Record<string, ReversePassStats> } | undefined;
  if (!r || typeof r !== 'object') return undefined;
  const passes = r.reverse ? [r.reverse] : r.passes ? Object.values(r.passes) : [];
  if (passes.length === 0) return undefined;
  return {
    blocks: passes.reduce((n, p) => n + p.blocksSent, 0),
    bytes: passes.reduce((n, p) => n + p.bytesSent, 0),
    blockSize: passes[0]!.blockSize,
  };
}

function newOperationId(kind: FailoverKind, job: string): string {
  const time = new Date()
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z');
  return `${kind}-${job}-${time}-${randomBytes(3).toString('hex')}`;
}

/**
 * The failover family of a job's replica, as a journaled state machine:
 * `ready` ─► (test failover: a disposable clone, replica untouched) ─► `failed-over` (planned or
 * unplanned; undo possible) ─► `committed` ─► `retired` (permanent), or back to `ready` by undo or
 * by failback (reverse replication onto the original, then the original runs again).
 *
 * Every operation journals each step before going on, so a process that dies anywhere can run
 * {@link resume} (or the same operation again) and the replica ends in the operation's before- or
 * after-state; every step is idempotent; preconditions are checked before anything changes, and a
 * refusal says why (`E_FAILED_OVER`, `E_SPLIT_BRAIN`, `E_UNSUPPORTED`, `E_CONFLICT`).
 *
 * @example
 * ```ts
 * const failover = new FailoverEngine({ stateStore, failoverStore: new FileFailoverStore(stateDir), replication });
 * // The command runs without a shell; it finds the clone in REPLIKIT_CLONE_ADDRESS and friends.
 * const { verdict } = await failover.test(job, { command: ['/usr/local/bin/check-clone'] });
 * await failover.unplanned(job, { force: false });
 * await failover.undo(job);
 * ```
 */
export class FailoverEngine {
  private readonly drivers: DriverRegistry;

  constructor(private readonly options: FailoverEngineOptions) {
    this.drivers = options.drivers ?? defaultDriverRegistry;
  }

  /** The job's failover record (a fresh `ready` one when it never failed over). */
  async status(job: JobSpec): Promise<FailoverRecord> {
    return (await this.options.failoverStore.load(job.name)) ?? freshFailoverRecord(job.name);
  }

  /** Test failover: boots a restore point as a disposable clone, judges it, deletes it. */
  test(job: JobSpec, options: TestFailoverOptions = {}): Promise<TestFailoverResult> {
    return this.execute(job, 'test', { ...options }, (ctx, resuming) => runTestFailover(ctx, options, resuming));
  }

  /** Unplanned failover to the newest or a chosen restore point, behind the split-brain guard. */
  async unplanned(job: JobSpec, options: UnplannedFailoverOptions = {}): Promise<FailoverRecord> {
    await this.execute(job, 'unplanned', { ...options }, (ctx) => runUnplannedFailover(ctx, options));
    return this.status(job);
  }

  /** Planned failover: run, shut the source down, final run, promote. No data loss. */
  planned(job: JobSpec, options: PlannedFailoverOptions = {}): Promise<PlannedFailoverResult> {
    return this.execute(job, 'planned', { ...options }, (ctx) => runPlannedFailover(ctx, options));
  }

  /** Undo: the replica returns to the point it failed over at, byte for byte, and replicates again. */
  async undo(job: JobSpec): Promise<FailoverRecord> {
    await this.execute(job, 'undo', {}, (ctx) => runUndo(ctx));
    return this.status(job);
  }

  /** Commit: the failover is final. */
  async commit(job: JobSpec): Promise<FailoverRecord> {
    await this.execute(job, 'commit', {}, (ctx) => runCommit(ctx));
    return this.status(job);
  }

  /** Permanent failover: the replica becomes the production VM and the job is retired. */
  async permanent(job: JobSpec): Promise<FailoverRecord> {
    await this.execute(job, 'permanent', {}, (ctx) => runPermanent(ctx));
    return this.status(job);
  }

  /**
   * Reverse replication: copies the promoted replica's blocks changed since the common point, and
   * the original's, onto the stopped original VM (`E_FAILED_OVER` with `details.reason:
   * 'no-common-point'` when they share none, unless `full`). The replica keeps running.
   */
  reverse(job: JobSpec, options: ReverseOptions = {}): Promise<ReverseResult> {
    return this.execute(job, 'reverse', { ...options }, (ctx) => runReverse(ctx, options));
  }

  /**
   * Planned failback: reverse pass, the replica's shutdown, final reverse pass, the replica back to
   * an ordinary replica, the original started, and a forward run that makes the new common point.
   */
  failback(job: JobSpec, options: FailbackOptions = {}): Promise<FailbackResult> {
    return this.execute(job, 'failback', { ...options }, (ctx) => runFailback(ctx, options));
  }

  /**
   * Finishes the operation a dead process left (a test failover is torn down, the others are
   * completed from their last journaled step). Resolves with the record; does nothing when no
   * operation is under way.
   */
  async resume(job: JobSpec): Promise<FailoverRecord> {
    const record = await this.status(job);
    const op = record.operation;
    if (!op) return record;
    const o = op.options;
    const bodies: Record<FailoverKind, (ctx: OperationContext, resuming: boolean) => Promise<unknown>> = {
      test: (ctx, resuming) => runTestFailover(ctx, o as TestFailoverOptions, resuming),
      unplanned: (ctx) => runUnplannedFailover(ctx, o as UnplannedFailoverOptions),
      planned: (ctx) => runPlannedFailover(ctx, o as PlannedFailoverOptions),
      undo: (ctx) => runUndo(ctx),
      commit: (ctx) => runCommit(ctx),
      permanent: (ctx) => runPermanent(ctx),
      reverse: (ctx) => runReverse(ctx, o as ReverseOptions),
      failback: (ctx) => runFailback(ctx, o as FailbackOptions),
    };
    await this.execute(job, op.kind, o, bodies[op.kind]);
    return this.status(job);
  }

  /**
   * Runs an operation: journals it, runs its body, records its outcome. An operation of another
   * kind under way is refused (resume it first); one of the same kind is resumed. A refusal before
   * any step ends the operation (`refused`); a failure later leaves it for {@link resume}.
   */
  private async execute<T>(
    job: JobSpec,
    kind: FailoverKind,
    options: Record<string, unknown>,
    body: (ctx: OperationContext, resuming: boolean) => Promise<T>,
  ): Promise<T> {
    const store = this.options.failoverStore;
    const record = await this.status(job);
    const pending = record.operation;
    if (pending && pending.kind !== kind) {
      throw new FailedOverError(
        `job '${job.name}' has an unfinished ${pending.kind} operation (${pending.id}); finish it first with 'replikit failover resume ${job.name}'`,
        { details: { state: record.state, operation: pending.id } },
      );
    }
    const resuming = pending !== undefined;
    const op: FailoverOperation = pending ?? {
      id: newOperationId(kind, job.name),
      kind,
      startedAt: new Date().toISOString(),
      options: JSON.parse(JSON.stringify(options, (_key, value) => (typeof value === 'function' ? undefined : value))),
      done: {},
    };
    record.operation = op;
    const { ctx, close } = createOperationContext(
      {
        stateStore: this.options.stateStore,
        failoverStore: store,
        drivers: this.drivers,
        replication: this.options.replication,
        faultHook: this.options.faultHook,
      },
      job,
      record,
      op,
    );
    try {
      if (!resuming) await ctx.save();
      let result: T;
      try {
        result = await body(ctx, resuming);
      } catch (error) {
        if (Object.keys(op.done).length === 0 && isReplikitError(error)) {
          // Refused before it changed anything: the operation ends here.
          delete record.operation;
          this.remember(record, op, 'refused', { error: { code: error.code, message: error.message } });
          await ctx.save();
        }
        throw error;
      }
      delete record.operation;
      const extra = result as { verdict?: unknown; point?: { id?: string } } | undefined;
      const sent = sentOf(result);
      this.remember(record, op, 'succeeded', {
        ...(sent ? { sent } : {}),
        ...(extra && typeof extra === 'object' && extra.verdict ? { verdict: extra.verdict } : {}),
        ...(record.point ? { pointId: record.point.id } : {}),
        ...(extra && typeof extra === 'object' && extra.point?.id ? { pointId: extra.point.id } : {}),
      });
      await ctx.save();
      return result;
    } finally {
      await close();
    }
  }

  private remember(
    record: FailoverRecord,
    op: FailoverOperation,
    outcome: 'succeeded' | 'refused',
    extra: Record<string, unknown>,
  ): void {
    record.history.push({
      id: op.id,
      kind: op.kind,
      startedAt: op.startedAt,
      endedAt: new Date().toISOString(),
      outcome,
      ...extra,
    } as FailoverRecord['history'][number]);
    if (record.history.length > MAX_HISTORY) record.history.splice(0, record.history.length - MAX_HISTORY);
  }
}
