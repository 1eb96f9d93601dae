import { FailedOverError, type OperationOptions, type Replica } from '@replikit/core';
import { sig, type XenFailoverContext } from './failover-context.js';
import { dropFailoverHold, withFailoverHold } from './failover-hold.js';
import { assertReplicaConfig, configOf, storedMark, updateConfig, vmRefOf, withMark } from './vm-config.js';

/**
 * See `FailoverHooks.demoteReplica`. Under the failover hold: `VM.hard_shutdown`, then each disk
 * is put back to the restore point's snapshot (a clone of the point's VDI swapped in, what
 * `VM.revert` does; byte for byte), start blocked again and the replica marked ready, then the
 * failover mark dropped. Asked again after a crash, the revert is simply made again.
 */
export async function demoteReplica(
  ctx: XenFailoverContext,
  replica: Replica,
  options?: OperationOptions,
): Promise<void> {
  const s = sig(options);
  const vmRef = await vmRefOf(ctx, replica.id, options);
  const first = await configOf(ctx, vmRef, options);
  assertReplicaConfig(first, replica.id);
  const mark = storedMark(first, replica.id);
  if (!mark) {
    // An ordinary replica already; a call that died after it dropped the mark may have left its hold.
    await dropFailoverHold(ctx, replica.id, vmRef, options);
    return;
  }
  if (mark.state === 'committed') {
    throw new FailedOverError(
      `replica '${replica.id}' is failed over and committed; it cannot return to restore point ${mark.pointId}`,
      { details: { state: mark.state, pointId: mark.pointId } },
    );
  }
  await withFailoverHold(
    ctx,
    replica.id,
    vmRef,
    async () => {
      if ((await ctx.connection.call<string>('VM.get_power_state', [vmRef], s)) !== 'Halted') {
        await ctx.connection.callAsync('VM.hard_shutdown', [vmRef], s);
      }
      await ctx.faultHook?.('demote:stopped');
      const point = { id: mark.pointId, replicaId: replica.id, label: '', createdAt: '' };
      await ctx.target.revert(replica, point, options); // blocks start, marks the replica ready
      await ctx.faultHook?.('demote:reverted');
      await updateConfig(ctx, vmRef, (c) => withMark(c, undefined), options);
      await ctx.faultHook?.('demote:unmarked');
    },
    options,
  );
}
