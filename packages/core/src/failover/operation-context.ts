import type { Hypervisor, Replica } from '../contracts/hypervisor.js';
import type { DriverRegistry } from '../engine/driver-registry.js';
import type { ReplicationEngine } from '../engine/run-engine.js';
import type { JobRecord } from '../engine/run-record.js';
import type { StateStore } from '../engine/state-store.js';
import { FailedOverError, NotFoundError, UnsupportedError } from '../errors.js';
import type { JobSpec } from '../job/job-spec.js';
import type { FailoverOperation, FailoverRecord } from './failover-record.js';
import type { FailoverStore } from './failover-store.js';

/** Called after each durable step of a failover operation (`<kind>:<step>`): crash tests kill the process there. */
export type FailoverFaultHook = (point: string) => void | Promise<void>;

/** What an operation's body works with. */
export interface OperationContext {
  /** The job. */
  readonly job: JobSpec;
  /** The job's failover record (saved by {@link step}). */
  readonly record: FailoverRecord;
  /** The operation under way. */
  readonly op: FailoverOperation;
  /** The run state store (job records, locks). */
  readonly stateStore: StateStore;
  /** The replication engine, for planned failover's runs. */
  readonly replication: ReplicationEngine | undefined;
  /**
   * Runs `fn` unless step `name` is journaled as done; journals its result (durably) and calls the
   * fault hook. A step must be idempotent: a crash after `fn` and before the journal repeats it.
   */
  step<T>(name: string, fn: () => Promise<T>): Promise<T>;
  /** The source driver (created once). */
  source(): Promise<Hypervisor>;
  /** The target driver (created once). */
  target(): Promise<Hypervisor>;
  /** The job's record, read afresh. */
  history(): Promise<JobRecord | undefined>;
  /** The job's replica, from its record; `E_NOT_FOUND` before the job's first complete run. */
  replica(): Promise<Replica>;
  /** Saves the record (after the body changed `record.state` or `record.point`). */
  save(): Promise<void>;
}

/** What the engine gives {@link createOperationContext}. */
export interface OperationDeps {
  stateStore: StateStore;
  failoverStore: FailoverStore;
  drivers: DriverRegistry;
  replication: ReplicationEngine | undefined;
  faultHook: FailoverFaultHook | undefined;
}

/** Builds the context of one operation and a `close` that closes the drivers it made. */
export function createOperationContext(
  deps: OperationDeps,
  job: JobSpec,
  record: FailoverRecord,
  op: FailoverOperation,
): { ctx: OperationContext; close: () => Promise<void> } {
  let source: Promise<Hypervisor> | undefined;
  let target: Promise<Hypervisor> | undefined;
  const context = { method: job.method, direction: job.options.direction };
  const save = async () => {
    record.updatedAt = new Date().toISOString();
    await deps.failoverStore.save(record);
  };
  const ctx: OperationContext = {
    job,
    record,
    op,
    stateStore: deps.stateStore,
    replication: deps.replication,
    async step<T>(name: string, fn: () => Promise<T>): Promise<T> {
      if (Object.hasOwn(op.done, name)) return op.done[name] as T;
      const value = await fn();
      op.done[name] = value === undefined ? null : value;
      await save();
      await deps.faultHook?.(`${op.kind}:${name}`);
      return value;
    },
    source: () => {
      source ??= deps.drivers.create(job.source, { side: 'source', ...context });
      return source;
    },
    target: () => {
      target ??= deps.drivers.create(job.target, { side: 'target', ...context });
      return target;
    },
    history: () => deps.stateStore.loadJob(job.name),
    async replica() {
      const replica = (await deps.stateStore.loadJob(job.name))?.replica;
      if (!replica) {
        throw new NotFoundError(`job '${job.name}' has no replica yet; run it once before failing over`);
      }
      return replica;
    },
    save,
  };
  const close = async () => {
    for (const made of [source, target]) {
      const hv = await made?.catch(() => undefined);
      await hv?.close().catch(() => undefined);
    }
  };
  return { ctx, close };
}

/** The failover hook `name` of `hv`, or `E_UNSUPPORTED` when the driver lacks it. */
export function hookOf<K extends keyof Hypervisor>(hv: Hypervisor, name: K): NonNullable<Hypervisor[K]> {
  const hook = hv[name];
  if (hv.capabilities.failover !== true || typeof hook !== 'function') {
    throw new UnsupportedError(
      `the '${hv.kind}' driver cannot fail over (no ${String(name)}; capabilities.failover is not true)`,
      { details: { capability: 'failover', hook: String(name), driver: hv.kind } },
    );
  }
  return (hook as (...args: unknown[]) => unknown).bind(hv) as NonNullable<Hypervisor[K]>;
}

/**
 * Refuses unless the job's lifecycle state is one of `allowed`. An operation that has done a step
 * already passed this check (a resume finishes it whatever the state says now).
 */
export function requireState(ctx: OperationContext, allowed: readonly FailoverRecord['state'][], what: string): void {
  const record = ctx.record;
  if (allowed.includes(record.state) || Object.keys(ctx.op.done).length > 0) return;
  const hint: Record<FailoverRecord['state'], string> = {
    ready: 'it is replicating (never failed over)',
    'failed-over': `it is failed over at restore point ${record.point?.id}; undo or commit that first`,
    committed: 'its failover is committed',
    retired: 'the job is retired by a permanent failover',
  };
  throw new FailedOverError(`cannot ${what} job '${record.job}': ${hint[record.state]}`, {
    details: { state: record.state },
  });
}

/**
 * Runs `fn` holding the job's lock (the one every run of the job takes), so no run of the job
 * goes on meanwhile; `E_CONFLICT` when a live run holds it.
 */
export async function withJobLock<T>(ctx: OperationContext, fn: () => Promise<T>): Promise<T> {
  const release = await ctx.stateStore.lockJob(ctx.job.name, ctx.op.id);
  try {
    return await fn();
  } finally {
    await release();
  }
}

/** Sets (or clears) the job record's lifecycle, with `extra` fields; call it holding the job lock. */
export async function setLifecycle(
  ctx: OperationContext,
  lifecycle: JobRecord['lifecycle'] | undefined,
  extra: Partial<JobRecord> = {},
): Promise<void> {
  const history = await ctx.history();
  if (!history) return;
  const { lifecycle: _old, ...rest } = history;
  await ctx.stateStore.saveJob({
    ...rest,
    ...extra,
    ...(lifecycle ? { lifecycle } : {}),
    updatedAt: new Date().toISOString(),
  });
}
