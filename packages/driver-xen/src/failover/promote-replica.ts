import { ConflictError, FailedOverError, type OperationOptions, type Replica, type RestorePoint } from '@replikit/core';
import { diskVbds, type PoolView, type XRecord } from '../xen-records.js';
import { REPLICA_BOOT_KEY, REPLICA_MARK_KEY } from '../xen-replica-keys.js';
import { sig, str, type XenFailoverContext } from './failover-context.js';
import { dropFailoverHold, withFailoverHold } from './failover-hold.js';
import { assertReplicaConfig, configOf, storedMark, updateConfig, vmRefOf, withMark } from './vm-config.js';

/**
 * True when each disk of the replica is the VDI the point's snapshot was taken of (no commit swapped
 * another one in since): a replica not marked ready (a restore point made outside a run) is then
 * still exactly that point.
 */
async function disksAreThePoints(
  ctx: XenFailoverContext,
  vmRef: string,
  point: RestorePoint,
  options?: OperationOptions,
): Promise<boolean> {
  const [vms, vbds, vdis] = await Promise.all(
    ['VM', 'VBD', 'VDI'].map((cls) =>
      ctx.connection.call<Record<string, XRecord>>(`${cls}.get_all_records`, [], sig(options)),
    ),
  );
  const view: PoolView = { vms: vms!, vbds: vbds!, vdis: vdis! };
  const snapshot = Object.values(view.vms).find((vm) => vm.is_a_snapshot === true && str(vm.uuid) === point.id);
  if (!snapshot) return false;
  const saved = new Map(diskVbds(view, snapshot).map((d) => [str(d.vbd.userdevice), str(d.vdi.snapshot_of)]));
  const live = diskVbds(view, view.vms[vmRef]!);
  return live.length === saved.size && live.every((d) => saved.get(str(d.vbd.userdevice)) === d.vdiRef);
}

/** Refuses a promotion of a replica that is not a complete version at `point` (`E_CONFLICT`). */
async function checkPromotable(
  ctx: XenFailoverContext,
  replica: Replica,
  vmRef: string,
  point: RestorePoint,
  options?: OperationOptions,
): Promise<void> {
  if (await ctx.target.hasPending(replica, options)) {
    throw new ConflictError(
      `replica '${replica.id}' has writes pending from an unfinished run; resume or roll back that run before failing over`,
    );
  }
  const points = await ctx.target.listPoints(replica, options);
  const newest = points.at(-1);
  if (newest?.id !== point.id) {
    throw new ConflictError(
      `restore point ${point.id} is not the newest of replica '${replica.id}' (${newest?.id ?? 'none'}); revert to it first`,
      { details: { pointId: point.id, newest: newest?.id } },
    );
  }
  const ready = (await configOf(ctx, vmRef, options))[REPLICA_MARK_KEY] === 'ready';
  if (!ready && !(await disksAreThePoints(ctx, vmRef, point, options))) {
    throw new ConflictError(
      `replica '${replica.id}' is being written (marked in progress, its disks are not those of restore point ${point.id}); finish or roll back its run before failing over`,
    );
  }
  const power = await ctx.connection.call<string>('VM.get_power_state', [vmRef], sig(options));
  if (power !== 'Halted') {
    throw new ConflictError(
      `replica '${replica.id}' is ${power.toLowerCase()} although it is not failed over; shut it down first`,
    );
  }
}

/**
 * See `FailoverHooks.promoteReplica`. Under the failover hold: the checks, then the mark
 * `promoting` (from here a crash is finished by the next call), start unblocked and the boot
 * marked, `VM.start`, the mark `promoted`. The restore point's snapshot stays: it is what undo
 * reverts to. Nothing starts unless the mark was set on a complete replica.
 */
export async function promoteReplica(
  ctx: XenFailoverContext,
  replica: Replica,
  point: RestorePoint,
  options?: OperationOptions,
): Promise<void> {
  const s = sig(options);
  const vmRef = await vmRefOf(ctx, replica.id, options);
  const first = await configOf(ctx, vmRef, options);
  assertReplicaConfig(first, replica.id);
  const found = storedMark(first, replica.id);
  if (found && (found.state !== 'promoting' || found.pointId !== point.id)) {
    if (found.state === 'promoted' && found.pointId === point.id) {
      // Done already; a call that died after it wrote the mark may have left its hold.
      await dropFailoverHold(ctx, replica.id, vmRef, options);
      return;
    }
    throw new FailedOverError(
      `replica '${replica.id}' is already failed over (${found.state} at restore point ${found.pointId}); undo that first`,
      { details: { state: found.state, pointId: found.pointId } },
    );
  }
  await withFailoverHold(
    ctx,
    replica.id,
    vmRef,
    async () => {
      if (!storedMark(await configOf(ctx, vmRef, options), replica.id)) {
        await checkPromotable(ctx, replica, vmRef, point, options);
        await updateConfig(ctx, vmRef, (c) => withMark(c, { state: 'promoting', pointId: point.id }), options);
        await ctx.faultHook?.('promote:flagged');
      }
      await updateConfig(ctx, vmRef, (c) => ({ ...c, [REPLICA_BOOT_KEY]: new Date().toISOString() }), options);
      for (const op of ['start', 'start_on']) {
        await ctx.connection.call('VM.remove_from_blocked_operations', [vmRef, op], s);
      }
      await ctx.faultHook?.('promote:unblocked');
      if ((await ctx.connection.call<string>('VM.get_power_state', [vmRef], s)) === 'Halted') {
        await ctx.connection.callAsync('VM.start', [vmRef, false, false], s);
      }
      await ctx.faultHook?.('promote:started');
      await updateConfig(ctx, vmRef, (c) => withMark(c, { state: 'promoted', pointId: point.id }), options);
      await ctx.faultHook?.('promote:marked');
    },
    options,
  );
}
