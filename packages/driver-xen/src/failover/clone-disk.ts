import type { DiskRef, OperationOptions } from '@replikit/core';
import type { PoolView, XRecord } from '../xen-records.js';
import { diskVbds } from '../xen-records.js';
import { cloneMarksOf } from './clone-records.js';
import { sig, str, type XenFailoverContext } from './failover-context.js';
import { maybeVmRef } from './vm-config.js';

/**
 * The VDI ref of `disk` when it is a disk of a test-failover clone (`getVM` of a clone lists its
 * disks by VDI uuid at their `userdevice`), else undefined.
 */
export async function cloneDiskVdi(
  ctx: XenFailoverContext,
  disk: DiskRef,
  options?: OperationOptions,
): Promise<string | undefined> {
  const vmRef = await maybeVmRef(ctx, disk.vmId, options);
  if (!vmRef) return undefined;
  const s = sig(options);
  const vm = await ctx.connection.call<XRecord>('VM.get_record', [vmRef], s);
  if (!cloneMarksOf(vm)) return undefined;
  const vbds: Record<string, XRecord> = {};
  const vdis: Record<string, XRecord> = {};
  for (const ref of (vm.VBDs as string[] | undefined) ?? []) {
    const vbd = await ctx.connection.call<XRecord>('VBD.get_record', [ref], s);
    vbds[ref] = vbd;
    if (str(vbd.VDI) !== 'OpaqueRef:NULL')
      vdis[str(vbd.VDI)] = await ctx.connection.call<XRecord>('VDI.get_record', [str(vbd.VDI)], s);
  }
  const view: PoolView = { vms: { [vmRef]: vm }, vbds, vdis };
  const at = diskVbds(view, vm).find(
    (d) => str(d.vbd.userdevice) === String(disk.meta?.userdevice ?? '') && str(d.vdi.uuid) === disk.id,
  );
  return at?.vdiRef;
}
