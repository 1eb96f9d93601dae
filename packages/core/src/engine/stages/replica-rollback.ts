import type { Hypervisor, Replica, ReplicaOwner } from '../../contracts/hypervisor.js';
import { isReplikitError } from '../../errors.js';
import { heldByAnother, ownerOfRun } from '../replica-hold.js';
import { fenced } from './fence-option.js';
import { newerPoint } from './replica-claim.js';
import type { RunContext } from './stage.js';

/** Records how the run ended in cleanup's part of the journal. */
function endAs(ctx: RunContext, how: 'rolledBack'): void {
  ctx.record.stages.cleanup = { ...ctx.record.stages.cleanup, [how]: true };
}

/**
 * Undoes this run's own writes, and nothing else: a replica held by another run is not touched,
 * and one that has a restore point newer than this run's base keeps it (only the writes this run
 * left pending are dropped). Either way the run then ends `failed`, with a warning saying why.
 */
export async function rollBack(ctx: RunContext, target: Hypervisor, replica: Replica): Promise<void> {
  const record = ctx.record;
  const before = record.stages.prepare?.start?.restorePointBefore;
  let holder: ReplicaOwner;
  try {
    holder = await target.claimReplica(replica, ownerOfRun(record, ctx.deps.stateDir), fenced(ctx));
  } catch (error) {
    if (!isReplikitError(error, 'E_NOT_FOUND')) throw error;
    // The replica is gone: a run that created it had already removed it; another cannot be undone.
    if (before) endNotRolledBack(ctx, `run ${record.runId} found replica '${replica.name}' gone`);
    else endAs(ctx, 'rolledBack');
    return;
  }
  if (holder.runId !== record.runId) {
    endNotRolledBack(
      ctx,
      `run ${record.runId} did not roll replica '${replica.name}' back: ${heldByAnother(replica.name, holder).message}; what is on the replica is that run's`,
    );
    return;
  }
  const points = await target.listRestorePoints(replica);
  const newest = points.at(-1);
  const ownNewest = newest?.label === record.runId;
  const hasBefore = before ? points.some((point) => point.id === before.id) : false;
  if (before && ownNewest && !hasBefore) {
    // The run's own restore point exists and retention already dropped the one before it:
    // the replica holds this run's complete version, which is kept.
    ctx.warn('W_ROLLBACK', `run ${record.runId} had committed its restore point; the replica keeps that version`);
    await target.markReplica(replica, 'ready');
  } else if (before && (newest?.id === before.id || (ownNewest && points.at(-2)?.id === before.id))) {
    await target.revertTo(replica, before, fenced(ctx));
    await target.markReplica(replica, 'ready');
    endAs(ctx, 'rolledBack');
  } else if (!before && points.every((point) => point.label === record.runId)) {
    // The replica never held a complete version: remove it rather than leave a partial one.
    await target.deleteReplica(replica).catch((error: unknown) => {
      if (!isReplikitError(error, 'E_NOT_FOUND')) throw error;
    });
    endAs(ctx, 'rolledBack');
  } else {
    // Returning to the newest point drops only what is pending: this run's writes (it holds the replica).
    if (newest) {
      await target.revertTo(replica, newest, fenced(ctx));
      await target.markReplica(replica, 'ready');
    }
    const why = (await newerPoint(ctx, target, replica)) ?? `replica '${replica.name}' moved on`;
    endNotRolledBack(
      ctx,
      `run ${record.runId} did not roll replica '${replica.name}' back: ${why}; reverting would lose it, so the replica keeps ${newest ? `that version (only this run's pending writes were dropped)` : 'what it has'}`,
    );
  }
}

/** Ends the run `failed`, saying in a warning and its error why its writes were not rolled back. */
function endNotRolledBack(ctx: RunContext, message: string): void {
  ctx.warn('W_NOT_ROLLED_BACK', message);
  ctx.record.outcome = 'failed';
  ctx.record.error = { code: 'E_CONFLICT', message };
}

/**
 * An abandoned run drops what is its own on the replica (its pending writes, when it holds the
 * replica) and leaves everything else as it is; it says what it did in a warning.
 */
export async function abandonReplica(ctx: RunContext, target: Hypervisor, replica: Replica): Promise<void> {
  const record = ctx.record;
  const holder = await target.replicaOwner(replica).catch((error: unknown) => {
    if (isReplikitError(error, 'E_NOT_FOUND')) return undefined;
    throw error;
  });
  if (holder?.runId !== record.runId) {
    const why = holder ? `it is held by run ${holder.runId}` : 'this run does not hold it';
    ctx.warn(
      'W_ABANDONED',
      `run ${record.runId} was abandoned; replica '${replica.name}' was left as it is (${why}) and no restore point was reverted`,
    );
    return;
  }
  const touched = record.stages.plan !== undefined;
  const newest = (await target.listRestorePoints(replica)).at(-1);
  if (touched && newest) {
    await target.revertTo(replica, newest, fenced(ctx));
    await target.markReplica(replica, 'ready');
  }
  ctx.warn(
    'W_ABANDONED',
    `run ${record.runId} was abandoned: ${touched && newest ? `its pending writes on replica '${replica.name}' were dropped (the replica is at restore point ${newest.id}), ` : ''}its hold on the replica is released and no restore point was reverted`,
  );
}

/** Ends this run's hold on its replica (nothing when another run holds it, or it is gone). */
export async function releaseReplica(ctx: RunContext, target: Hypervisor, replica: Replica): Promise<void> {
  await target.releaseReplica(replica, ctx.record.runId).catch((error: unknown) => {
    if (!isReplikitError(error, 'E_NOT_FOUND')) throw error;
  });
}
