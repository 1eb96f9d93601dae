import type { DiskRef } from '../../contracts/disk.js';
import type { Hypervisor, Snapshot } from '../../contracts/hypervisor.js';
import type { ReplicationCacheProvider } from '../../contracts/replication-cache.js';
import { ConflictError } from '../../errors.js';
import type { DiskFacts } from '../plan/disk-plan.js';
import { ALWAYS_FULL_METHODS, planDisk } from '../plan/plan-disk.js';
import { costlierThanBefore } from '../plan/run-cost.js';
import { preparedOf, type RunJournal, snapshotOf } from '../run-journal.js';
import { type DiskRecord, emptyStats, type JobRecord } from '../run-record.js';
import { emitPlan } from './replan-disk.js';
import { abandonReplica, rollBack } from './replica-rollback.js';
import type { RunContext, Stage } from './stage.js';

/** The cache fact of a disk that is not compared with a cache: none used, or a first run that writes one. */
function cacheOff(cache: ReplicationCacheProvider | undefined): DiskFacts['cache'] {
  return cache ? { status: 'missing' } : { status: 'off' };
}

/**
 * `plan`: gathers each disk's facts (first seed, base snapshot, resize, replica change, cache
 * status, the tracker's answer, …), plans it with {@link planDisk}, journals the plans with their
 * reasons and facts, and announces them (`plan` event, `W_RUN_MORE_EXPENSIVE`). The journaled plan
 * is the plan that runs: a cache lost before a disk's transfer re-plans that disk, journaled too.
 */
export class PlanStage {
  constructor(private readonly ctx: RunContext) {}

  /**
   * The backup version this run's version inherits unchanged blocks from: the job's last one, when
   * the block store can still inherit from it (not deleted, same block size and disks).
   */
  private async backupBase(history: JobRecord | undefined, snapshot: Snapshot): Promise<string | undefined> {
    const base = history?.lastBackupVersion;
    const sink = this.ctx.deps.backup;
    if (!base || !this.ctx.record.job.options.singlePass || !sink?.canInherit) return base;
    const spec = {
      vm: snapshot.vmId,
      runId: this.ctx.record.runId,
      blockSize: this.ctx.record.blockSize,
      disks: snapshot.disks.map((disk) => ({ id: disk.id, size: disk.size })),
      baseVersion: base,
    };
    return (await sink.canInherit(spec, { signal: this.ctx.signal })) ? base : undefined;
  }

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
    const backupBase = !firstRun && !start.replicaChange ? await this.backupBase(history, snapshot) : undefined;
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
        // A pull compares every block's digests: what the tracker would say cannot narrow it.
        tracker:
          firstRun || options.direction === 'pull'
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
    emitPlan(this.ctx, record.disks);
    // From here on the replica is written: it must refuse to start until commit. The plan's part
    // in the journal says so (a rollback undoes the replica's writes when it is there).
    record.stages.plan = {
      ...(fingerprint ? { replicaFingerprint: fingerprint } : {}),
      ...(backup ? { backup } : {}),
    };
    await this.ctx.save();
    await target.markReplica(replica, 'in-progress', { signal: this.ctx.signal });
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
