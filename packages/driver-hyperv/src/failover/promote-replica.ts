import { ConflictError, FailedOverError, type Replica, type RestorePoint } from '@replikit/core';
import { RESTORE_CHECKPOINT, START_VM } from '../scripts/target-scripts.js';
import { releaseOwner, writeBoot, writeMark } from '../target/replica-files.js';
import { LOCAL_TARGET_FILES } from '../target/target-files.js';
import { failoverRunId, type HyperVFailoverContext, isOff, withFailoverHold } from './failover-context.js';
import { readFailover, writeFailover } from './failover-files.js';

/**
 * See `FailoverHooks.promoteReplica`. Under the failover hold: the checks (no run's writes
 * pending, `point` the newest restore point, the VM off), then the state `promoting` (from here a
 * crash is finished by the next call), `Restore-VMSnapshot` of the point (whatever a cut commit
 * left on the live files goes; the point's checkpoint stays: undo applies it again), the start
 * guard lifted (marked ready, the boot recorded), `Start-VM`, the state `promoted`.
 */
export async function promoteReplica(ctx: HyperVFailoverContext, replica: Replica, point: RestorePoint): Promise<void> {
  const vm = await ctx.target.vm(replica);
  const { dir } = vm.identity;
  const found = await readFailover(dir);
  if (found && (found.state !== 'promoting' || found.pointId !== point.id)) {
    if (found.state === 'promoted' && found.pointId === point.id) {
      // Done already; a promote killed after it wrote `promoted` (still inside its hold) left its hold.
      await releaseOwner(LOCAL_TARGET_FILES, dir, failoverRunId(replica.id));
      return;
    }
    throw new FailedOverError(
      `replica '${replica.id}' is already failed over (${found.state} at restore point ${found.pointId}); undo that first`,
      { details: { state: found.state, pointId: found.pointId } },
    );
  }
  await withFailoverHold(dir, replica.id, async () => {
    let state = await readFailover(dir);
    const checkpoints = await ctx.target.pointCheckpoints(vm);
    const at = checkpoints.find((c) => c.Id === point.id);
    if (!state) {
      if (await ctx.target.hasPending(replica)) {
        throw new ConflictError(
          `replica '${replica.id}' has writes pending from an unfinished run; resume or roll back that run before failing over`,
        );
      }
      const newest = checkpoints.at(-1);
      if (!at || newest?.Id !== point.id) {
        throw new ConflictError(
          `restore point ${point.id} is not the newest of replica '${replica.id}' (${newest?.Id ?? 'none'}); revert to it first`,
          { details: { pointId: point.id, newest: newest?.Id } },
        );
      }
      if (!isOff(vm.row.State)) {
        throw new ConflictError(
          `replica '${replica.id}' is ${vm.row.State.toLowerCase()} although it is not failed over; shut it down first`,
        );
      }
      state = { state: 'promoting', pointId: point.id };
      await writeFailover(dir, state);
      await ctx.faultHook?.('promote:flagged');
    }
    const now = (await ctx.target.vm(replica)).row;
    if (!state.restored) {
      if (!at) throw new ConflictError(`restore point ${point.id} of replica '${replica.id}' is gone`);
      await ctx.link.call(RESTORE_CHECKPOINT, { vm: now.Name, name: at.Name });
      state = { ...state, restored: true };
      await writeFailover(dir, state);
      await ctx.faultHook?.('promote:restored');
    }
    if (isOff((await ctx.target.vm(replica)).row.State)) {
      await writeMark(LOCAL_TARGET_FILES, dir, 'ready');
      await writeBoot(LOCAL_TARGET_FILES, dir);
      await ctx.faultHook?.('promote:unblocked');
      await ctx.link.call(START_VM, { vm: now.Name });
    }
    await ctx.faultHook?.('promote:started');
    await writeFailover(dir, { state: 'promoted', pointId: point.id });
    await ctx.faultHook?.('promote:marked');
  });
}
