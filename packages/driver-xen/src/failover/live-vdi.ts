import { NotFoundError, type OperationOptions } from '@replikit/core';
import { diskVbds, otherConfig, type PoolView, toVMInfo, type XRecord } from '../xen-records.js';
import { REPLICA_NAME_KEY } from '../xen-replica-keys.js';
import { sig, str, type XenFailoverContext } from './failover-context.js';
import { CLONE_KEY } from './failover-keys.js';
import { vmRefOf } from './vm-config.js';

/** One disk of a VM as reverse replication sees it: the VDI the VM runs on now. */
export interface LiveVdi {
  /** The VM's ref. */
  readonly vmRef: string;
  /** The VM's uuid. */
  readonly vmId: string;
  /** The VM's `power_state` (`Running`, `Halted` …). */
  readonly power: string;
  /** True when the VM is a replica (marked `replikit:replica`). */
  readonly isReplica: boolean;
  /** True when the VM is a test-failover clone. */
  readonly isClone: boolean;
  /** The disk's `userdevice`. */
  readonly userdevice: string;
  /** The ref of the VDI attached at that device. */
  readonly vdiRef: string;
  /** Its record. */
  readonly vdi: XRecord;
  /** The size the disk presents (a replica's: its source disk's). */
  readonly size: number;
  /** The records read, for callers that look further (snapshots of the VM). */
  readonly view: PoolView;
}

/** The VM, VBD and VDI records of the pool, in three calls. */
export async function readView(ctx: XenFailoverContext, options?: OperationOptions): Promise<PoolView> {
  const [vms, vbds, vdis] = await Promise.all(
    ['VM', 'VBD', 'VDI'].map((cls) =>
      ctx.connection.call<Record<string, XRecord>>(`${cls}.get_all_records`, [], sig(options)),
    ),
  );
  return { vms: vms!, vbds: vbds!, vdis: vdis! };
}

/**
 * Disk `diskId` of VM `vmId` as the driver lists it (a VDI uuid, or on a replica the source disk
 * id it mirrors), with the VDI it runs on now. `E_NOT_FOUND` when the VM has no such disk.
 */
export async function liveVdiOf(
  ctx: XenFailoverContext,
  vmId: string,
  diskId: string,
  options?: OperationOptions,
): Promise<LiveVdi> {
  const vmRef = await vmRefOf(ctx, vmId, options);
  const view = await readView(ctx, options);
  const vm = view.vms[vmRef];
  if (!vm) throw new NotFoundError(`no VM with uuid '${vmId}' on this pool`);
  const info = toVMInfo(view, vm);
  const index = info.disks.findIndex((d) => d.id === diskId);
  const at = diskVbds(view, vm)[index];
  if (index < 0 || !at) {
    throw new NotFoundError(
      `VM '${vmId}' has no disk '${diskId}' (it has ${info.disks.map((d) => d.id).join(', ') || 'none'})`,
    );
  }
  const config = otherConfig(vm);
  return {
    vmRef,
    vmId,
    power: str(vm.power_state),
    isReplica: config[REPLICA_NAME_KEY] !== undefined,
    isClone: config[CLONE_KEY] !== undefined,
    userdevice: str(at.vbd.userdevice),
    vdiRef: at.vdiRef,
    vdi: at.vdi,
    size: info.disks[index]!.size,
    view,
  };
}
