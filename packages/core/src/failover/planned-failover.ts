import type { RestorePoint } from '../contracts/hypervisor.js';
import { findUnfinished } from '../engine/state-store.js';
import { ConflictError, InputError, isReplikitError } from '../errors.js';
import { hookOf, type OperationContext, requireState } from './operation-context.js';
import { promoteAt } from './promote-ops.js';

/** Options of a planned failover. */
export interface PlannedFailoverOptions {
  /**
   * How long the guest may take to shut down before the VM is stopped at once (the driver's
   * `powerOff`), in milliseconds.
   * @default 900000
   */
  shutdownTimeoutMs?: number;
}

/** What a planned failover reports. */
export interface PlannedFailoverResult {
  /** The run made while the source still ran, and the final one after its shutdown. */
  runs: { first: string; final: string };
  /** Whether the shutdown had to be forced. */
  forced: boolean;
  /** The restore point the replica was promoted at (the final run's). */
  point: RestorePoint;
}

/** Runs the job once (or finishes its unfinished run) and resolves with the run's id (planned failover, failback). */
export async function replicateOnce(ctx: OperationContext): Promise<string> {
  const engine = ctx.replication;
  if (!engine) {
    throw new InputError('a planned failover replicates the job: give the FailoverEngine a `replication` engine');
  }
  const unfinished = await findUnfinished(ctx.stateStore, ctx.job.name);
  const run = unfinished ? await engine.resume(unfinished.runId) : await engine.run(ctx.job);
  if (run.state !== 'completed') {
    throw new ConflictError(`run ${run.runId} of job '${ctx.job.name}' ended '${run.state}'; the failover stops here`);
  }
  return run.runId;
}

/** Shuts the source down, forced after `timeoutMs`; resolves with whether it was forced. */
async function shutDownSource(ctx: OperationContext, timeoutMs: number): Promise<boolean> {
  const source = await ctx.source();
  // The job may name the VM; power and powerOff take its id (the xen driver knows VMs by uuid).
  const found = await source.getVM(ctx.job.source.vm);
  const vm = found.id;
  if (found.powerState === 'stopped') return false;
  try {
    await source.power(vm, 'shutdown', { signal: AbortSignal.timeout(timeoutMs) });
    if ((await source.getVM(vm)).powerState === 'stopped') return false;
  } catch (error) {
    if (!isReplikitError(error, 'E_ABORTED')) throw error;
  }
  await hookOf(source, 'powerOff')(vm);
  if ((await source.getVM(vm)).powerState !== 'stopped') {
    throw new ConflictError(`source VM '${vm}' did not stop, even forced; stop it by hand and run the failover again`);
  }
  return true;
}

/**
 * A planned failover, with no data loss: an incremental run while the source runs, the source's
 * shutdown (forced after a timeout), a final incremental run, then the replica promoted at the
 * final run's restore point and started.
 */
export async function runPlannedFailover(
  ctx: OperationContext,
  options: PlannedFailoverOptions,
): Promise<PlannedFailoverResult> {
  requireState(ctx, ['ready'], 'fail over');
  hookOf(await ctx.target(), 'promoteReplica');
  await ctx.replica();
  const first = await ctx.step('first-run', () => replicateOnce(ctx));
  const forced = await ctx.step('shutdown', () => shutDownSource(ctx, options.shutdownTimeoutMs ?? 900_000));
  const final = await ctx.step('final-run', () => replicateOnce(ctx));
  const point = await promoteAt(ctx, undefined);
  return { runs: { first, final }, forced, point };
}
