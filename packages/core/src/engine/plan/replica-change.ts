import type { ReplicaChange } from './disk-plan.js';

/**
 * How a replica changed, from the details of its fingerprint at the last commit and now: a boot
 * count that moved says `booted`; other details that moved say `written`; without details to
 * compare, `changed`.
 */
export function replicaChangeOf(
  before: Record<string, unknown> | undefined,
  now: Record<string, unknown> | undefined,
): ReplicaChange {
  if (!before || !now) return 'changed';
  if (typeof before.bootCount === 'number' && typeof now.bootCount === 'number' && before.bootCount !== now.bootCount) {
    return 'booted';
  }
  return 'written';
}
