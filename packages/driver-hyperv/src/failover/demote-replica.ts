import { FailedOverError, type Replica } from '@replikit/core';
import { STOP_VM } from '../scripts/target-scripts.js';
import { releaseOwner } from '../target/replica-files.js';
import { LOCAL_TARGET_FILES } from '../target/target-files.js';
import { failoverRunId, type HyperVFailoverContext, isOff, withFailoverHold } from './failover-context.js';
import { readFailover, writeFailover } from './failover-files.js';

/**
 * See `FailoverHooks.demoteReplica`. Under the failover hold: `Stop-VM -TurnOff`, then the
 * replica's revert to the point it was promoted from (later checkpoints removed,
 * `Restore-VMSnapshot`: the failover's writes, all in the live differencing files, are discarded;
 * marked ready), then the failover state dropped. Asked again after a crash, the revert is made
 * again, which changes nothing more.
 */
export async function demoteReplica(ctx: HyperVFailoverContext, replica: Replica): Promise<void> {
  const vm = await ctx.target.vm(replica);
  const { dir } = vm.identity;
  const f = await readFailover(dir);
  if (!f) {
    // An ordinary replica already; a demote killed once it dropped the state left its hold.
    await releaseOwner(LOCAL_TARGET_FILES, dir, failoverRunId(replica.id));
    return;
  }
  if (f.state === 'committed') {
    throw new FailedOverError(
      `replica '${replica.id}' is failed over and committed; it cannot return to restore point ${f.pointId}`,
      { details: { state: f.state, pointId: f.pointId } },
    );
  }
  await withFailoverHold(dir, replica.id, async () => {
    const now = (await ctx.target.vm(replica)).row;
    if (!isOff(now.State)) await ctx.link.call(STOP_VM, { vm: now.Name });
    await ctx.faultHook?.('demote:stopped');
    await ctx.target.revert(replica, { id: f.pointId, replicaId: replica.id, label: '', createdAt: '' });
    await ctx.faultHook?.('demote:reverted');
    await writeFailover(dir, undefined);
    await ctx.faultHook?.('demote:unmarked');
  });
}
