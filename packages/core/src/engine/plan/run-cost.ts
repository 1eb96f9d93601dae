import type { DiskRecord } from '../run-record.js';
import type { PlanReasonCode } from './disk-plan.js';

/** Reasons a user does not expect: something outside replikit (or a lost file) made the run dearer. */
const UNEXPECTED: ReadonlySet<PlanReasonCode> = new Set<PlanReasonCode>([
  'REPLICA_MODIFIED',
  'TRACKING_RESET',
  'CACHE_MISSING',
  'CACHE_INVALID',
  'BASE_SNAPSHOT_MISSING',
]);

/** How much of the disk a plan reads: tracked blocks, every block against a cache, against the replica, or sends all. */
export function planCost(disk: Pick<DiskRecord, 'mode' | 'digestSource'>): number {
  if (disk.mode === 'tracked') return 0;
  if (disk.mode === 'hash-diff') return disk.digestSource === 'cache' ? 1 : 2;
  return 3;
}

/**
 * The disks whose plan costs more than the same disk's plan in the previous run, for a reason the
 * user may not expect (an outside write, a booted replica, a lost cache): each deserves a warning.
 */
export function costlierThanBefore(
  disks: readonly DiskRecord[],
  previous: readonly DiskRecord[] | undefined,
): DiskRecord[] {
  if (!previous) return [];
  return disks.filter((disk) => {
    const before = previous.find((p) => p.sourceDiskId === disk.sourceDiskId);
    if (!before || !disk.reason || !UNEXPECTED.has(disk.reason.code)) return false;
    return planCost(disk) > planCost(before);
  });
}
