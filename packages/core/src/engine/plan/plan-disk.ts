import type { DiskFacts, DiskPlan, PlanReason, PlanReasonCode } from './disk-plan.js';

/** Methods that read the whole VM every run (a Xen export): their disks are planned `METHOD_ALWAYS_FULL`. */
export const ALWAYS_FULL_METHODS: ReadonlySet<string> = new Set(['xva']);

function reason(code: PlanReasonCode, message: string, evidence: PlanReason['evidence'] = {}): PlanReason {
  return { code, message, evidence };
}

/**
 * Decides how one disk is replicated, from facts gathered before planning: the mode, where the
 * replica's digests come from, and why. Pure: the same facts always give the same plan, and the
 * engine journals this plan before the transfer starts and runs exactly it.
 *
 * The checks go from the most to the least sweeping: a forced or first run reads everything; a
 * replica that changed, a cache that cannot be trusted or a tracker that cannot vouch make the run
 * compare every block; otherwise only the tracked blocks are read.
 *
 * @example
 * ```ts
 * const plan = planDisk({ ...facts, forced: true });
 * plan.mode; // 'full'
 * plan.reason.code; // 'FORCED'
 * ```
 */
export function planDisk(facts: DiskFacts): DiskPlan {
  const cacheOn = facts.cache.status !== 'off';
  const full = (why: PlanReason): DiskPlan => ({ mode: 'full', writesCache: cacheOn, reason: why });
  if (facts.forced) return full(reason('FORCED', 'a full run was asked for (--full)'));
  if (facts.methodAlwaysFull) {
    return full(reason('METHOD_ALWAYS_FULL', `method '${facts.method}' reads the whole VM every run`));
  }
  if (facts.firstSeed)
    return full(reason('FIRST_SEED', 'the replica holds no complete version yet: every block is sent'));
  if (facts.baseSnapshotMissing) {
    return full(
      reason('BASE_SNAPSHOT_MISSING', 'the snapshot the last run left as base is not known: every block is sent'),
    );
  }

  // From here on every block the tracker does not vouch for is compared with the replica's digest.
  const trusted = facts.cache.status === 'ok' ? ('cache' as const) : undefined;
  const scan = (why: PlanReason): DiskPlan => ({
    mode: 'hash-diff',
    digestSource: trusted ?? 'replica',
    writesCache: cacheOn,
    reason: why,
  });
  if (facts.baseSize === undefined) {
    return scan(reason('DISK_SET_CHANGED', 'the disk is not in the last run’s snapshot: every block is compared'));
  }
  if (facts.baseSize !== facts.size) {
    return scan(
      reason(
        'DISK_RESIZED',
        `the disk was resized from ${facts.baseSize} to ${facts.size} bytes: every block is compared`,
        {
          baseSize: facts.baseSize,
          size: facts.size,
        },
      ),
    );
  }
  if (facts.backupBaseMissing) {
    return scan(
      reason('BACKUP_BASE_MISSING', 'the backup version has no previous one to inherit from: every block is read'),
    );
  }
  if (facts.replicaModified) {
    const how = {
      booted: 'was booted',
      written: 'was written outside a run (reverted to a restore point, or written outside replikit)',
      changed: 'changed (booted, reverted to a restore point, or written outside replikit)',
    }[facts.replicaModified];
    return scan(
      reason('REPLICA_MODIFIED', `the replica ${how} since the last run: every block is compared with it`, {
        change: facts.replicaModified,
      }),
    );
  }
  if (facts.cache.status === 'missing') {
    return scan(
      reason('CACHE_MISSING', 'the disk has no replication cache: the replica is read to compare every block'),
    );
  }
  if (facts.cache.status === 'invalid') {
    return scan(
      reason('CACHE_INVALID', `the replication cache cannot be used (${facts.cache.reason}): the replica is read`, {
        cache: facts.cache.reason,
      }),
    );
  }
  // A pull compares digests of every block on both sides: a tracker cannot narrow it, no cache helps.
  if (facts.direction === 'pull') {
    if (facts.cacheRequested) {
      return scan(
        reason('PULL_IGNORES_CACHE', 'a pull job does not use the replication cache: the replica is read', {
          tracker: facts.tracker,
        }),
      );
    }
    return scan(
      reason('PULL_HASH_DIFF', 'a pull job compares the digests of every block, computed on both sides', {
        tracker: facts.tracker,
      }),
    );
  }
  if (facts.tracker === 'ok') {
    return {
      mode: 'tracked',
      ...(trusted ? { digestSource: trusted } : {}),
      writesCache: cacheOn,
      reason: reason('TRACKED', 'only the blocks the change tracker reports are read'),
    };
  }
  if (facts.tracker === 'reset') {
    return scan(
      reason(
        'TRACKING_RESET',
        'the change tracker cannot vouch for the interval (written outside its tracking, or its map was lost): every block is read',
        {
          digestSource: trusted ?? 'replica',
        },
      ),
    );
  }
  if (trusted) return scan(reason('INCREMENTAL', 'every block is read and compared with the replication cache'));
  return scan(
    reason(
      'TRACKING_UNAVAILABLE',
      'the source tracks no changes for this disk: every block is read and compared with the replica',
      {
        tracker: facts.tracker,
      },
    ),
  );
}
