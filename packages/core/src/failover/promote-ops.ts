import type { RestorePoint } from '../contracts/hypervisor.js';
import { isReplikitError, NotFoundError, SplitBrainError } from '../errors.js';
import { hookOf, type OperationContext, requireState, setLifecycle, withJobLock } from './operation-context.js';

/** Options of an unplanned failover. */
export interface UnplannedFailoverOptions {
  /** The restore point to fail over to (its id); the newest when omitted. Newer points are dropped. */
  pointId?: string;
  /**
   * Fail over even when the source VM answers and runs (split brain: two live copies). Only when
   * the source is known to be fenced.
   * @default false
   */
  force?: boolean;
}

/**
 * The split-brain guard: resolves with what the source looked like; rejects with `E_SPLIT_BRAIN`
 * when it answered and is running and `force` is not set. A source that cannot be reached passes.
 */
export async function guardSplitBrain(ctx: OperationContext, force: boolean): Promise<string> {
  let state: string;
  try {
    const source = await ctx.source();
    state = (await source.getVM(ctx.job.source.vm)).powerState;
  } catch (error) {
    if (isReplikitError(error, 'E_INPUT') || isReplikitError(error, 'E_JOB')) throw error;
    return 'unreachable';
  }
  if (state === 'running' && !force) {
    throw new SplitBrainError(
      `source VM '${ctx.job.source.vm}' of job '${ctx.job.name}' is reachable and running; shut it down, use a planned failover, or pass --force if it is fenced`,
      { details: { source: ctx.job.source.vm, powerState: state } },
    );
  }
  return state;
}

/**
 * Promotes the replica at `pointId` (newest when omitted): reverts to it first when it is older
 * (newer points are dropped), promotes and starts it, and marks the job failed over.
 */
export async function promoteAt(ctx: OperationContext, pointId: string | undefined): Promise<RestorePoint> {
  const target = await ctx.target();
  const promote = hookOf(target, 'promoteReplica');
  const replica = await ctx.replica();
  return withJobLock(ctx, async () => {
    const point = await ctx.step('point', async () => {
      const points = await target.listRestorePoints(replica);
      const chosen = pointId ? points.find((p) => p.id === pointId) : points[points.length - 1];
      if (!chosen) {
        throw new NotFoundError(
          pointId
            ? `replica '${replica.name}' has no restore point ${pointId}; 'replikit failover status' lists them`
            : `replica '${replica.name}' has no restore point yet; run the job first`,
        );
      }
      return chosen;
    });
    await ctx.step('revert', async () => {
      const points = await target.listRestorePoints(replica);
      if (points[points.length - 1]?.id !== point.id) await target.revertTo(replica, point);
      return true;
    });
    await ctx.step('promote', async () => {
      await promote(replica, point);
      return true;
    });
    await ctx.step('record', async () => {
      await setLifecycle(ctx, 'failed-over');
      return true;
    });
    ctx.record.state = 'failed-over';
    ctx.record.point = point;
    await ctx.save();
    return point;
  });
}

/** An unplanned failover (see {@link UnplannedFailoverOptions}). */
export async function runUnplannedFailover(
  ctx: OperationContext,
  options: UnplannedFailoverOptions,
): Promise<RestorePoint> {
  requireState(ctx, ['ready'], 'fail over');
  hookOf(await ctx.target(), 'promoteReplica');
  await ctx.step('guard', () => guardSplitBrain(ctx, options.force === true));
  return promoteAt(ctx, options.pointId);
}

/**
 * Undo: the replica goes back to the restore point it was failed over at, byte for byte (the
 * failover's writes are discarded) and replicates again. When that point is the last run's, the
 * job record trusts the replica again, so the next run is incremental.
 */
export async function runUndo(ctx: OperationContext): Promise<void> {
  requireState(ctx, ['failed-over'], 'undo the failover of');
  await withJobLock(ctx, async () => {
    await demoteAndRecord(ctx);
    ctx.record.state = 'ready';
    delete ctx.record.point;
    await ctx.save();
  });
}

/**
 * The journaled steps `demote` (the replica back at the point it was promoted from) and `record`
 * (the job's lifecycle cleared, with the replica's fingerprint kept when the point is the job's
 * last completed run), shared by undo and failback. The caller holds the job lock.
 */
export async function demoteAndRecord(ctx: OperationContext): Promise<void> {
  const target = await ctx.target();
  const demote = hookOf(target, 'demoteReplica');
  const replica = await ctx.replica();
  const point = ctx.record.point;
  await ctx.step('demote', async () => {
    await demote(replica);
    return true;
  });
  await ctx.step('record', async () => {
    const history = await ctx.history();
    const trusted = point !== undefined && history?.lastCompletedRunId === point.label;
    const state = trusted ? await target.replicaState(replica) : undefined;
    await setLifecycle(
      ctx,
      undefined,
      state
        ? { replicaFingerprint: state.value, ...(state.details ? { replicaFingerprintDetails: state.details } : {}) }
        : {},
    );
    return true;
  });
}

export async function runCommit(ctx: OperationContext): Promise<void> {
  requireState(ctx, ['failed-over'], 'commit the failover of');
  const target = await ctx.target();
  const commit = hookOf(target, 'commitFailover');
  const replica = await ctx.replica();
  await withJobLock(ctx, async () => {
    await ctx.step('commit', async () => {
      await commit(replica);
      return true;
    });
    await ctx.step('record', async () => {
      await setLifecycle(ctx, 'committed');
      return true;
    });
    ctx.record.state = 'committed';
    await ctx.save();
  });
}

/** Permanent failover: commits when needed, turns the replica into the production VM, retires the job. */
export async function runPermanent(ctx: OperationContext): Promise<void> {
  requireState(ctx, ['failed-over', 'committed'], 'make permanent the failover of');
  const target = await ctx.target();
  const commit = hookOf(target, 'commitFailover');
  const retire = hookOf(target, 'retireReplica');
  const replica = await ctx.replica();
  await withJobLock(ctx, async () => {
    await ctx.step('commit', async () => {
      if ((await hookOf(target, 'failoverMark')(replica)).state !== 'committed') await commit(replica);
      return true;
    });
    await ctx.step('retire', async () => {
      await retire(replica);
      return true;
    });
    await ctx.step('record', async () => {
      await setLifecycle(ctx, 'retired');
      return true;
    });
    ctx.record.state = 'retired';
    await ctx.save();
  });
}
