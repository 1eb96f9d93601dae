import type {
  CloneInfo,
  CloneOptions,
  Extent,
  LiveDisk,
  OperationOptions,
  Replica,
  ReplicaFailoverMark,
  RestorePoint,
} from '@replikit/core';
import { cloneRestorePoint, destroyClone, listClones } from './clone-restore-point.js';
import { commitFailover, retireReplica } from './commit-retire.js';
import { demoteReplica } from './demote-replica.js';
import type { HyperVFailoverContext } from './failover-context.js';
import { readFailover } from './failover-files.js';
import { openLiveDisk, promotedChanges } from './live-disk.js';
import { promoteReplica } from './promote-replica.js';

/**
 * The failover hooks of the Hyper-V driver (see `FailoverHooks` in `@replikit/core`). A replica's
 * failover state is a file of its folder; a test clone is a VM of its own whose notes say so. Each
 * hook is idempotent: asked again after a crash at any instant, it finishes what the cut call
 * started.
 */
export class HyperVFailover {
  constructor(private readonly ctx: HyperVFailoverContext) {}

  /** See `FailoverHooks.cloneRestorePoint`. */
  clone(replica: Replica, point: RestorePoint, options: CloneOptions): Promise<CloneInfo> {
    return cloneRestorePoint(this.ctx, replica, point, options);
  }

  /** See `FailoverHooks.destroyClone`. */
  destroyClone(cloneId: string, options?: OperationOptions): Promise<void> {
    return destroyClone(this.ctx, cloneId, options);
  }

  /** See `FailoverHooks.listClones`. */
  listClones(replica?: Replica): Promise<CloneInfo[]> {
    return listClones(this.ctx, replica?.id);
  }

  /** See `FailoverHooks.promoteReplica`. */
  promote(replica: Replica, point: RestorePoint): Promise<void> {
    return promoteReplica(this.ctx, replica, point);
  }

  /** See `FailoverHooks.demoteReplica`. */
  demote(replica: Replica): Promise<void> {
    return demoteReplica(this.ctx, replica);
  }

  /** See `FailoverHooks.commitFailover`. */
  commit(replica: Replica): Promise<void> {
    return commitFailover(this.ctx, replica);
  }

  /** See `FailoverHooks.retireReplica`. */
  retire(replica: Replica): Promise<void> {
    return retireReplica(this.ctx, replica);
  }

  /** See `FailoverHooks.failoverMark`: a promotion not finished reads as promoted (undo applies). */
  async mark(replica: Replica): Promise<ReplicaFailoverMark> {
    const f = await readFailover((await this.ctx.target.vm(replica)).identity.dir);
    if (!f) return { state: 'replica' };
    return { state: f.state === 'committed' ? 'committed' : 'promoted', pointId: f.pointId };
  }

  /** See `FailoverHooks.promotedChanges`. */
  promotedChanges(replica: Replica, diskId: string): Promise<Extent[] | undefined> {
    return promotedChanges(this.ctx, replica, diskId);
  }

  /** See `FailoverHooks.openLiveDisk`. */
  openLiveDisk(vmId: string, diskId: string, mode: 'read' | 'write'): Promise<LiveDisk> {
    return openLiveDisk(this.ctx, vmId, diskId, mode);
  }
}
