import { ConflictError, type OperationOptions } from '@replikit/core';
import { otherConfig, type XRecord } from '../xen-records.js';
import { cloneMarksOf, cloneView, replicaOfUnmarked } from './clone-records.js';
import { sig, str, type XenFailoverContext } from './failover-context.js';
import { CLONE_VDI_KEY } from './failover-keys.js';
import { maybeVmRef } from './vm-config.js';

/** Destroys the VDIs tagged as `cloneUuid`'s that no VBD uses any more. */
async function dropCloneDisks(ctx: XenFailoverContext, cloneUuid: string, options?: OperationOptions): Promise<void> {
  const vdis = await ctx.connection.call<Record<string, XRecord>>('VDI.get_all_records', [], sig(options));
  for (const [ref, vdi] of Object.entries(vdis)) {
    if (otherConfig(vdi)[CLONE_VDI_KEY] !== cloneUuid) continue;
    if (((vdi.VBDs as string[] | undefined) ?? []).length > 0) continue;
    await ctx.connection.callAsync('VDI.destroy', [ref], sig(options));
  }
}

/**
 * See `FailoverHooks.destroyClone`: `VM.hard_shutdown` when it runs, its disks tagged as its own
 * (a clone cut before its tags), `VM.destroy`, then its own VDIs. A clone that is gone is fine (the
 * VDIs a crash left behind are deleted); a VM that is no clone is refused with `E_CONFLICT`.
 */
export async function destroyClone(
  ctx: XenFailoverContext,
  cloneId: string,
  options?: OperationOptions,
): Promise<void> {
  const s = sig(options);
  const ref = await maybeVmRef(ctx, cloneId, options);
  if (!ref) {
    await dropCloneDisks(ctx, cloneId, options);
    return;
  }
  const view = await cloneView(ctx, options);
  const vm = view.vms[ref]!;
  const marks = cloneMarksOf(vm);
  const unmarked = !marks && vm.is_a_template === true && replicaOfUnmarked(view, vm) !== undefined;
  if (vm.is_a_snapshot === true || (!marks && !unmarked)) {
    throw new ConflictError(`VM '${cloneId}' is not a clone made by a test failover; it is not deleted`, {
      details: { vmId: cloneId },
    });
  }
  if (str(vm.power_state) !== 'Halted') await ctx.connection.callAsync('VM.hard_shutdown', [ref], s);
  if (!marks || marks.state === 'building') {
    // Its disks may not be tagged yet: they are the VDIs of its VBDs that nothing else uses.
    for (const vbdRef of (vm.VBDs as string[] | undefined) ?? []) {
      const vbd = await ctx.connection.call<XRecord>('VBD.get_record', [vbdRef], s);
      if (vbd.type !== 'Disk' || str(vbd.VDI) === 'OpaqueRef:NULL') continue;
      const vdi = await ctx.connection.call<XRecord>('VDI.get_record', [str(vbd.VDI)], s);
      if (((vdi.VBDs as string[] | undefined) ?? []).length !== 1 || otherConfig(vdi)[CLONE_VDI_KEY] === cloneId)
        continue;
      await ctx.connection.call('VDI.remove_from_other_config', [str(vbd.VDI), CLONE_VDI_KEY], s);
      await ctx.connection.call('VDI.add_to_other_config', [str(vbd.VDI), CLONE_VDI_KEY, cloneId], s);
    }
  }
  await ctx.connection.callAsync('VM.destroy', [ref], s);
  await ctx.faultHook?.('clone:vm-destroyed');
  await dropCloneDisks(ctx, cloneId, options);
}
