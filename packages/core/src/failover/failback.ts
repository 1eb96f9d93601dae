import type { RestorePoint } from '../contracts/hypervisor.js';
import { ConflictError, FailedOverError, isReplikitError } from '../errors.js';
import { hookOf, type OperationContext, requireState, withJobLock } from './operation-context.js';
import { replicateOnce } from './planned-failover.js';
import { demoteAndRecord } from './promote-ops.js';
import { findCommonPoint, type ReversePassStats, reversePass } from './reverse-replication.js';

/** Options of a failback. */
export interface FailbackOptions {
  /**
   * How long the promoted replica's guest may take to shut down before it is stopped at once
   * (the driver's `powerOff`), in milliseconds.
   * @default 900000
   */
  shutdownTimeoutMs?: number;
  /** Copy every block back when the two sides share no restore point (see `ReverseOptions.full`). */
  full?: boolean;
}

/** What a failback reports. */
export interface FailbackResult {
  /** The reverse pass made while the replica ran, and the final one after its shutdown. */
  passes: { first: ReversePassStats; final: ReversePassStats };
  /** Whether the replica's shutdown had to be forced. */
  forced: boolean;
  /** The forward run that made the replica an ordinary replica again at a new common point. */
  run: string;
  /** That run's restore point. */
  point: RestorePoint;
}

/** Shuts the promoted replica down, forced after `timeoutMs`; resolves with whether it was forced. */
async function stopReplica(ctx: OperationContext, timeoutMs: number): Promise<boolean> {
  const target = await ctx.target();
  const replica = await ctx.replica();
  if ((await target.getVM(replica.id)).powerState === 'stopped') return false;
  try {
    await target.power(replica.id, 'shutdown', { signal: AbortSignal.timeout(timeoutMs) });
    if ((await target.getVM(replica.id)).powerState === 'stopped') return false;
  } catch (error) {
    if (!isReplikitError(error, 'E_ABORTED')) throw error;
  }
  await hookOf(target, 'powerOff')(replica.id);
  if ((await target.getVM(replica.id)).powerState !== 'stopped') {
    throw new ConflictError(
      `replica '${replica.name}' did not stop, even forced; stop it by hand and run 'replikit failover resume'`,
    );
  }
  return true;
}

/**
 * Planned failback, with no data loss: a reverse pass while the promoted replica runs, its
 * shutdown (forced after a timeout), a final reverse pass (the original now holds every byte the
 * replica's guest wrote), the replica returned to the point it was promoted from (an ordinary
 * replica again), the original started, and a forward run of the job: it sends the blocks the
 * failback changed on the original and makes a new restore point, the new common point, so the
 * job's next runs are incremental.
 */
export async function runFailback(ctx: OperationContext, options: FailbackOptions): Promise<FailbackResult> {
  requireState(ctx, ['failed-over'], 'fail back');
  const target = await ctx.target();
  const source = await ctx.source();
  hookOf(target, 'demoteReplica'); // every hook checked before the first step
  hookOf(target, 'promotedChanges');
  hookOf(target, 'openLiveDisk');
  hookOf(source, 'openLiveDisk');
  if (!ctx.replication) {
    throw new FailedOverError('a failback replicates the job again: give the FailoverEngine a `replication` engine', {
      details: { state: ctx.record.state },
    });
  }
  const replica = await ctx.replica();
  const base = await ctx.step('common-point', () => findCommonPoint(ctx, options.full === true));
  const first = await withJobLock(ctx, () => reversePass(ctx, 'first-pass', base));
  const forced = await ctx.step('stop-replica', () => stopReplica(ctx, options.shutdownTimeoutMs ?? 900_000));
  const final = await withJobLock(ctx, () => reversePass(ctx, 'final-pass', base));
  await withJobLock(ctx, () => demoteAndRecord(ctx));
  ctx.record.state = 'ready';
  delete ctx.record.point;
  await ctx.save();
  await ctx.step('start-original', async () => {
    // By the id getVM resolved: a driver may know the VM by name for getVM but power it by id only (xen).
    const vm = await source.getVM(ctx.job.source.vm);
    if (vm.powerState !== 'running') await source.power(vm.id, 'start');
    return true;
  });
  const run = await ctx.step('forward-run', () => replicateOnce(ctx));
  const points = await target.listRestorePoints(replica);
  const made = points.find((p) => p.label === run) ?? points[points.length - 1]!;
  return { passes: { first, final }, forced, run, point: made };
}
