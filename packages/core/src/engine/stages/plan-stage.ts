import type { DiskRef } from '../../contracts/disk.js';
import type { Hypervisor, Snapshot } from '../../contracts/hypervisor.js';
import type { ReplicationCacheProvider } from '../../contracts/replication-cache.js';
import { ConflictError } from '../../errors.js';
import type { DiskFacts } from '../plan/disk-plan.js';
import { ALWAYS_FULL_METHODS, planDisk } from '../plan/plan-disk.js';
import { costlierThanBefore } from '../plan/run-cost.js';
import { plannedOf, preparedOf, type RunJournal, snapshotOf } from '../run-journal.js';
import { type DiskRecord, emptyStats, type JobRecord } from '../run-record.js';
import { abandonReplica, rollBack } from './replica-rollback.js';
import type { RunContext, Stage } from './stage.js';

/** The key of a disk's replication cache: the job, and the replica disk. */
export function cacheKeyOf(
  record: Pick<RunJournal, 'job'>,
  disk: { replicaDiskId: string },
): { job: string; diskId: string } {
  return { job: record.job.name, diskId: disk.replicaDiskId };
}

/** The cache fact of a disk that is not compared with a cache: none used, or a first run that writes one. */
function cacheOff(cache: ReplicationCacheProvider | undefined): DiskFacts['cache'] {
  return cache ? { status: 'missing' } : { status: 'off' };
}

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

/**
 * `plan`: gathers each disk's facts (first seed, base snapshot, resize, replica change, cache
 * status, the tracker's answer, …), plans it with {@link planDisk}, journals the plans with their
 * reasons and facts, and announces them (`plan` event, `W_RUN_MORE_EXPENSIVE`). The journaled plan
 * is the plan that runs: a cache lost before a disk's transfer re-plans that disk, journaled too.
 */
export class PlanStage {
  constructor(private readonly ctx: RunContext) {}

  /** Plans every disk and journals the plan; from here on the replica is written. */
  async run(): Promise<void> {
    const record = this.ctx.record;
    const snapshot = snapshotOf(record);
    const { replica, start } = preparedOf(record);
    const { source, target } = await this.ctx.drivers();
    const firstSeed = start.restorePointBefore === null || replica.created;
    const firstRun = firstSeed || !start.baseSnapshot;
    const options = record.job.options;
    const cache = options.replicationCache && options.direction !== 'pull' ? this.ctx.deps.cache : undefined;
    const fingerprint =
      cache && !firstRun ? (await target.replicaState(replica, { signal: this.ctx.signal })).value : '';
    const history = await this.ctx.jobHistory();
    // Blocks this run does not send are the previous version's, when the replica still holds it.
    const backupBase = !firstRun && !start.replicaChange ? history?.lastBackupVersion : undefined;
    const backup = options.singlePass ? (backupBase ? { baseVersion: backupBase } : {}) : undefined;
    const previous = await this.previousRun(history);
    record.disks = [];
    for (const [position, disk] of snapshot.disks.entries()) {
      const replicaDisk = replica.disks[position];
      if (!replicaDisk || replicaDisk.size !== disk.size) {
        throw new ConflictError(
          `replica '${replica.name}' disk ${position} does not match source disk '${disk.id}' (${disk.size} bytes); seed a new replica`,
        );
      }
      const baseDisk = start.baseSnapshot?.disks[position];
      const sameDisk = baseDisk?.id === disk.id ? baseDisk : undefined;
      const facts: DiskFacts = {
        forced: record.forced === true,
        methodAlwaysFull: ALWAYS_FULL_METHODS.has(record.job.method),
        method: record.job.method,
        firstSeed,
        baseSnapshotMissing: !start.baseSnapshot,
        size: disk.size,
        baseSize: sameDisk?.size,
        backupBaseMissing: options.singlePass === true && backup?.baseVersion === undefined,
        replicaModified: start.replicaChange,
        direction: options.direction,
        cacheRequested: options.replicationCache === true,
        cache:
          cache && !firstRun ? await this.checkCache(cache, replicaDisk.id, disk.size, fingerprint) : cacheOff(cache),
        tracker: firstRun
          ? 'not-asked'
          : await this.askTracker(source, disk, start.baseSnapshot, previous?.disks[position]),
      };
      const plan = planDisk(facts);
      record.disks.push({
        position,
        sourceDiskId: disk.id,
        replicaDiskId: replicaDisk.id,
        size: disk.size,
        mode: plan.mode,
        ...(plan.digestSource ? { digestSource: plan.digestSource } : {}),
        writesCache: plan.writesCache,
        reason: plan.reason,
        facts,
        targetKnownZero: replica.created,
        checkpointBlock: 0,
        done: false,
        stats: emptyStats(),
      });
    }
    for (const disk of costlierThanBefore(record.disks, previous?.disks)) {
      this.ctx.warn(
        'W_RUN_MORE_EXPENSIVE',
        `disk '${disk.sourceDiskId}' is replicated '${disk.mode}' this run (the last run read less): ${disk.reason!.code}, ${disk.reason!.message}`,
      );
    }
    this.emitPlan(record.disks);
    // From here on the replica is written: it must refuse to start until commit. The plan's part
    // in the journal says so (a rollback undoes the replica's writes when it is there).
    record.stages.plan = {
      ...(fingerprint ? { replicaFingerprint: fingerprint } : {}),
      ...(backup ? { backup } : {}),
    };
    await this.ctx.save();
    await target.markReplica(replica, 'in-progress', { signal: this.ctx.signal });
  }

  private emitPlan(disks: readonly DiskRecord[]): void {
    this.ctx.deps.events.emit('plan', {
      runId: this.ctx.record.runId,
      job: this.ctx.record.job.name,
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
  async replanIfCacheLost(disk: DiskRecord, blockCount: number): Promise<void> {
    const cache = this.ctx.deps.cache;
    const record = this.ctx.record;
    if (!cache && disk.writesCache) {
      // Resumed by an engine without the cache provider the run planned with.
      return this.replan(disk, { status: 'off' }, 'there is no replication cache provider');
    }
    if (!cache || disk.mode === 'full' || disk.digestSource !== 'cache') return;
    const opened = await cache.open(
      this.cacheKey(disk),
      {
        blockSize: record.blockSize,
        blockCount,
        digest: record.digest,
        fingerprint: plannedOf(record).replicaFingerprint ?? '',
      },
      { signal: this.ctx.signal },
    );
    if (opened.status === 'ok') {
      await opened.reader.close();
      return;
    }
    const status: DiskFacts['cache'] =
      opened.status === 'missing' ? { status: 'missing' } : { status: 'invalid', reason: opened.reason };
    await this.replan(disk, status, `the replication cache of disk '${disk.replicaDiskId}' is no longer usable`);
  }

  /** Plans a disk again with a new cache status, journals it and says so. */
  private async replan(disk: DiskRecord, status: DiskFacts['cache'], why: string): Promise<void> {
    const record = this.ctx.record;
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
    this.ctx.warn(
      'W_CACHE_DISCARDED',
      `${why}; disk '${disk.sourceDiskId}' is planned again: '${plan.mode}', ${plan.reason.code}`,
    );
    this.emitPlan([disk]);
    await this.ctx.save();
  }

  /** The job's last completed run, whose plan this run's is compared with. */
  private async previousRun(history: JobRecord | undefined): Promise<RunJournal | undefined> {
    const id = history?.lastCompletedRunId;
    return id ? this.ctx.deps.store.loadRun(id).catch(() => undefined) : undefined;
  }

  /**
   * Asks the source's change tracker whether it vouches for the interval since the base snapshot.
   * A tracker that cannot tell is taken as `reset` when it vouched for this disk before (the last
   * run tracked it, or was itself a reset), else as `unavailable` (the disk is not tracked).
   */
  private async askTracker(
    source: Hypervisor,
    disk: DiskRef,
    base: Snapshot | undefined,
    before: DiskRecord | undefined,
  ): Promise<'ok' | 'reset' | 'unavailable'> {
    if (!source.changeTracker || !base) return 'unavailable';
    const changes = await source.changeTracker.changes(disk, base, snapshotOf(this.ctx.record), {
      signal: this.ctx.signal,
    });
    if (changes) return 'ok';
    const trackedBefore = before?.mode === 'tracked' || before?.reason?.code === 'TRACKING_RESET';
    return trackedBefore ? 'reset' : 'unavailable';
  }

  /** The key of a disk's replication cache in this run's job. */
  cacheKey(disk: { replicaDiskId: string }): { job: string; diskId: string } {
    return cacheKeyOf(this.ctx.record, disk);
  }

  /** Decides whether a disk's replication cache can be trusted; says why not in a warning. */
  private async checkCache(
    cache: ReplicationCacheProvider,
    diskId: string,
    size: number,
    fingerprint: string,
  ): Promise<DiskFacts['cache']> {
    const record = this.ctx.record;
    const opened = await cache.open(
      { job: record.job.name, diskId },
      {
        blockSize: record.blockSize,
        blockCount: Math.ceil(size / record.blockSize),
        digest: record.digest,
        fingerprint,
      },
      { signal: this.ctx.signal },
    );
    if (opened.status === 'ok') {
      await opened.reader.close();
      return { status: 'ok' };
    }
    this.ctx.warn(
      opened.status === 'missing' ? 'W_CACHE_MISSING' : 'W_CACHE_DISCARDED',
      opened.status === 'missing'
        ? `disk '${diskId}' has no replication cache yet; this run reads the replica and writes one`
        : `the replication cache of disk '${diskId}' was discarded: ${opened.reason}; this run reads the replica (verified diff) and writes a new cache`,
    );
    return opened.status === 'missing' ? { status: 'missing' } : { status: 'invalid', reason: opened.reason };
  }
}

/**
 * The `plan` stage as a {@link Stage}. Undo: the replica's writes, made from the end of the plan
 * on, are rolled back to the restore point the run started from (or, for an abandoned run, only
 * its pending writes are dropped).
 */
export const planStage: Stage = {
  state: 'plan',
  run: (context) => new PlanStage(context).run(),
  ran: (context) => context.record.stages.plan !== undefined,
  async undo(context, ending): Promise<void> {
    const { replica } = preparedOf(context.record);
    const { target } = await context.drivers();
    if (ending === 'abandon') await abandonReplica(context, target, replica);
    else await rollBack(context, target, replica);
  },
};
