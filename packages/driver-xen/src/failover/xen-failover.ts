import type {
  CloneInfo,
  CloneOptions,
  DiskRef,
  Extent,
  LiveDisk,
  OperationOptions,
  Replica,
  ReplicaFailoverMark,
  RestorePoint,
} from '@replikit/core';
import type { XenConnection } from '../xapi/xen-connection.js';
import type { XenTarget } from '../xen-target.js';
import { cloneDiskVdi } from './clone-disk.js';
import { listClones } from './clone-records.js';
import { cloneRestorePoint } from './clone-restore-point.js';
import { commitFailover } from './commit-failover.js';
import { demoteReplica } from './demote-replica.js';
import { destroyClone } from './destroy-clone.js';
import { sig, type XenFailoverContext, type XenFailoverFaultHook } from './failover-context.js';
import { type LiveDiskIo, openLiveDisk } from './live-disk.js';
import { liveVdiOf } from './live-vdi.js';
import { promoteReplica } from './promote-replica.js';
import { changesSinceSnapshot, promotedChanges } from './promoted-changes.js';
import { retireReplica } from './retire-replica.js';
import { assertReplicaConfig, configOf, publicMark, storedMark, vmRefOf } from './vm-config.js';

/**
 * The failover hooks of the Xen driver (see `FailoverHooks` in `@replikit/core`), over XAPI only.
 * A replica's failover state is its `replikit:failover` mark; a test clone is `VM.clone` of a
 * restore point's snapshot marked `replikit:clone`. Each hook is idempotent: asked again after a
 * crash at any instant, it finishes what the crashed call started.
 */
export class XenFailover {
  private readonly ctx: XenFailoverContext;

  constructor(connection: XenConnection, target: XenTarget, faultHook?: XenFailoverFaultHook) {
    this.ctx = { connection, target, faultHook };
  }

  /** See `FailoverHooks.cloneRestorePoint`. */
  clone(replica: Replica, point: RestorePoint, options: CloneOptions): Promise<CloneInfo> {
    return cloneRestorePoint(this.ctx, replica, point, options);
  }

  /** See `FailoverHooks.destroyClone`. */
  destroyClone(cloneId: string, options?: OperationOptions): Promise<void> {
    return destroyClone(this.ctx, cloneId, options);
  }

  /** See `FailoverHooks.listClones`. */
  listClones(replica?: Replica, options?: OperationOptions): Promise<CloneInfo[]> {
    return listClones(this.ctx, replica?.id, options);
  }

  /** See `FailoverHooks.promoteReplica`. */
  promote(replica: Replica, point: RestorePoint, options?: OperationOptions): Promise<void> {
    return promoteReplica(this.ctx, replica, point, options);
  }

  /** See `FailoverHooks.demoteReplica`. */
  demote(replica: Replica, options?: OperationOptions): Promise<void> {
    return demoteReplica(this.ctx, replica, options);
  }

  /** See `FailoverHooks.commitFailover`. */
  commit(replica: Replica, options?: OperationOptions): Promise<void> {
    return commitFailover(this.ctx, replica, options);
  }

  /** See `FailoverHooks.retireReplica`. */
  retire(replica: Replica, options?: OperationOptions): Promise<void> {
    return retireReplica(this.ctx, replica, options);
  }

  /** See `FailoverHooks.failoverMark`. */
  async mark(replica: Replica, options?: OperationOptions): Promise<ReplicaFailoverMark> {
    const config = await configOf(this.ctx, await vmRefOf(this.ctx, replica.id, options), options);
    assertReplicaConfig(config, replica.id);
    return publicMark(storedMark(config, replica.id));
  }

  /** See `FailoverHooks.powerOff`: `VM.hard_shutdown` unless halted. */
  async powerOff(vmId: string, options?: OperationOptions): Promise<void> {
    const ref = await vmRefOf(this.ctx, vmId, options);
    const state = await this.ctx.connection.call<string>('VM.get_power_state', [ref], sig(options));
    if (state !== 'Halted') await this.ctx.connection.callAsync('VM.hard_shutdown', [ref], sig(options));
  }

  /** See `FailoverHooks.promotedChanges`: CBT since the promotion point's snapshot. */
  promotedChanges(replica: Replica, diskId: string, options?: OperationOptions): Promise<Extent[] | undefined> {
    return promotedChanges(this.ctx, replica, diskId, options);
  }

  /** See `FailoverHooks.openLiveDisk` (`io`: the driver's VDI readers and writers). */
  openLiveDisk(
    io: LiveDiskIo,
    vmId: string,
    diskId: string,
    mode: 'read' | 'write',
    options?: OperationOptions,
  ): Promise<LiveDisk> {
    return openLiveDisk(this.ctx, io, vmId, diskId, mode, options);
  }

  /**
   * What CBT reports written on disk `diskId` of VM `vmId` since the snapshot VDI with uuid
   * `fromVdi` (`ChangeTracker.pending`); `undefined` when it cannot tell or that VDI is not a
   * snapshot of the disk the VM has now.
   */
  async changesSince(
    vmId: string,
    diskId: string,
    fromVdi: string,
    options?: OperationOptions,
  ): Promise<Extent[] | undefined> {
    const disk = await liveVdiOf(this.ctx, vmId, diskId, options);
    const from = Object.entries(disk.view.vdis).find(([, vdi]) => vdi.uuid === fromVdi);
    if (!from || from[1].snapshot_of !== disk.vdiRef) return undefined;
    // No probe snapshot: `pending` takes none (see ChangeTracker.pending); a running disk cannot tell.
    return changesSinceSnapshot(this.ctx, disk, from[0], from[1], options, { probe: false });
  }

  /** The VDI ref of a clone's disk, or undefined when `disk` is not one (see {@link cloneDiskVdi}). */
  cloneDiskVdi(disk: DiskRef, options?: OperationOptions): Promise<string | undefined> {
    return cloneDiskVdi(this.ctx, disk, options);
  }
}
