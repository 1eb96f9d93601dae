/** The failover operations the SIGKILL matrix kills. */
export type FailoverOp = 'test' | 'unplanned' | 'undo' | 'planned' | 'commit' | 'permanent';

/**
 * Kills per failover operation in the SIGKILL matrix: 10 for every operation (issue 19 asks for
 * at least 10 each); `REPLIKIT_FAILOVER_CRASH_POINTS=<n>` raises every operation to max(n, 10);
 * `REPLIKIT_CRASH_POINTS=<n>` (what `.ci/run` sets on Node 22 and 24) caps every operation at n.
 */
export function failoverCrashPoints(_op: FailoverOp, env: Readonly<Record<string, string | undefined>>): number {
  const wanted = Number(env.REPLIKIT_FAILOVER_CRASH_POINTS ?? 0);
  const cap = Number(env.REPLIKIT_CRASH_POINTS ?? 0);
  const points = wanted > 0 ? Math.max(10, wanted) : 10;
  return cap > 0 ? Math.min(cap, points) : points;
}
