import type { Hypervisor, Replica } from '../contracts/hypervisor.js';
import type { JobRecord } from '../engine/run-record.js';
import type { FailoverRecord } from './failover-record.js';

/** Something a job left on a platform that nothing will clean up by itself. */
export interface Orphan {
  /** `clone`: a test failover's clone; `snapshot`: a source snapshot no run uses. */
  kind: 'clone' | 'snapshot';
  /** The driver's id of the VM or snapshot. */
  id: string;
  /** Its name or label. */
  name: string;
  /** Why it counts as orphaned. */
  reason: string;
}

/** What {@link listOrphans} looks at. */
export interface OrphanQuery {
  /** The job's name (its runs label their snapshots `<job>-…`). */
  job: string;
  /** The source VM's id or name. */
  sourceVm: string;
  /** The source driver. */
  source: Hypervisor;
  /** The target driver. */
  target: Hypervisor;
  /** The job's record (base snapshot, replica). */
  history: JobRecord | undefined;
  /** The job's failover record (an operation under way owns its clone). */
  failover: FailoverRecord | undefined;
  /** Snapshot ids that unfinished runs still use. */
  inUse?: readonly string[];
}

/**
 * The orphans of a job: clones of its replica that no failover operation under way owns (a test
 * failover that died and was never resumed), and snapshots of its source VM, labelled by its runs,
 * that are neither the base of the next run nor used by an unfinished run. Retention never counts
 * or prunes these; this is how a user finds them.
 */
export async function listOrphans(query: OrphanQuery): Promise<Orphan[]> {
  const orphans: Orphan[] = [];
  const replica: Replica | undefined = query.history?.replica;
  const pendingOp = query.failover?.operation?.id;
  if (replica && query.target.capabilities.failover && query.target.listClones) {
    for (const clone of await query.target.listClones(replica)) {
      if (clone.operationId === pendingOp) continue;
      orphans.push({
        kind: 'clone',
        id: clone.id,
        name: clone.name,
        reason: `clone of restore point ${clone.pointId} made by operation ${clone.operationId}, which is not under way`,
      });
    }
  }
  const keep = new Set([query.history?.baseSnapshot?.id, ...(query.inUse ?? [])]);
  const snapshots = await query.source.listSnapshots(query.sourceVm).catch(() => []);
  for (const snapshot of snapshots) {
    if (keep.has(snapshot.id) || !snapshot.label.startsWith(`${query.job}-`)) continue;
    orphans.push({
      kind: 'snapshot',
      id: snapshot.id,
      name: snapshot.label,
      reason: 'a snapshot of a run of this job that is neither the next base nor used by an unfinished run',
    });
  }
  return orphans;
}
