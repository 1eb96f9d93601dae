import type { DiskFacts } from '../plan/disk-plan.js';
import { planDisk } from '../plan/plan-disk.js';
import { plannedOf, type RunJournal } from '../run-journal.js';
import type { DiskRecord } from '../run-record.js';
import { cacheKeyOf } from './cache-key.js';
import type { RunContext } from './stage.js';

/** Facts for a disk journaled by an older version (no facts kept): an ordinary incremental disk. */
function legacyFacts(record: RunJournal, disk: DiskRecord): DiskFacts {
  return {
    forced: false,
    methodAlwaysFull: false,
    method: record.job.method,
    firstSeed: false,
    baseSnapshotMissing: false,
    size: disk.size,
    baseSize: disk.size,
    backupBaseMissing: false,
    replicaModified: undefined,
    direction: record.job.options.direction,
    cacheRequested: true,
    cache: { status: 'ok' },
    tracker: disk.mode === 'tracked' ? 'ok' : 'unavailable',
  };
}

/** Announces disks' plans (the `plan` event). */
export function emitPlan(ctx: RunContext, disks: readonly DiskRecord[]): void {
  ctx.deps.events.emit('plan', {
    runId: ctx.record.runId,
    job: ctx.record.job.name,
    disks: disks.map((disk) => ({
      id: disk.sourceDiskId,
      mode: disk.mode,
      ...(disk.digestSource ? { digestSource: disk.digestSource } : {}),
      reason: disk.reason ?? { code: disk.mode === 'full' ? 'FIRST_SEED' : 'INCREMENTAL', message: '', evidence: {} },
    })),
  });
}

/**
 * A disk whose plan trusted a replication cache that is no longer usable (deleted or damaged
 * since planning, or lost before a resume) is planned again from the same facts and the cache's
 * new status, and the new plan is journaled before the disk's blocks are read: the journal
 * always holds the plan that runs.
 */
export async function replanIfCacheLost(ctx: RunContext, disk: DiskRecord, blockCount: number): Promise<void> {
  const cache = ctx.deps.cache;
  const record = ctx.record;
  if (!cache && disk.writesCache) {
    // Resumed by an engine without the cache provider the run planned with.
    return replan(ctx, disk, { status: 'off' }, 'there is no replication cache provider');
  }
  if (!cache || disk.mode === 'full' || disk.digestSource !== 'cache') return;
  const opened = await cache.open(
    cacheKeyOf(record, disk),
    {
      blockSize: record.blockSize,
      blockCount,
      digest: record.digest,
      fingerprint: plannedOf(record).replicaFingerprint ?? '',
    },
    { signal: ctx.signal },
  );
  if (opened.status === 'ok') {
    await opened.reader.close();
    return;
  }
  const status: DiskFacts['cache'] =
    opened.status === 'missing' ? { status: 'missing' } : { status: 'invalid', reason: opened.reason };
  await replan(ctx, disk, status, `the replication cache of disk '${disk.replicaDiskId}' is no longer usable`);
}

/** Plans a disk again with a new cache status, journals it and says so. */
async function replan(ctx: RunContext, disk: DiskRecord, status: DiskFacts['cache'], why: string): Promise<void> {
  const record = ctx.record;
  const facts: DiskFacts = { ...(disk.facts ?? legacyFacts(record, disk)), cache: status };
  const plan = planDisk(facts);
  disk.mode = plan.mode;
  if (plan.digestSource) disk.digestSource = plan.digestSource;
  else delete disk.digestSource;
  disk.writesCache = plan.writesCache;
  disk.reason = plan.reason;
  disk.facts = facts;
  // The counters of the plan's blocks are counted again for the new plan.
  disk.stats.blocksTotal = 0;
  disk.stats.bytesTotal = 0;
  ctx.warn(
    'W_CACHE_DISCARDED',
    `${why}; disk '${disk.sourceDiskId}' is planned again: '${plan.mode}', ${plan.reason.code}`,
  );
  emitPlan(ctx, [disk]);
  await ctx.save();
}
