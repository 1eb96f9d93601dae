import type { BackupSink } from '../../contracts/backup-sink.js';
import type { Extent, OperationOptions } from '../../contracts/disk.js';
import type { Hypervisor, Replica, RestorePoint } from '../../contracts/hypervisor.js';
import type { ReplicationCacheProvider } from '../../contracts/replication-cache.js';
import { isReplikitError } from '../../errors.js';
import type { JobSpec } from '../../job/job-spec.js';
import type { RuleSet } from '../../rules/rule.js';
import { defaultRuleSets, validateJob } from '../../rules/rule-validator.js';
import { countBlocks, countBytes, toBlockRanges } from '../block-ranges.js';
import type { DriverRegistry } from '../driver-registry.js';
import type { RunJournal } from '../run-journal.js';
import type { DiskRecord, JobRecord } from '../run-record.js';
import { findUnfinished, type StateStore } from '../state-store.js';
import type { DiskFacts } from './disk-plan.js';
import { ALWAYS_FULL_METHODS, planDisk } from './plan-disk.js';
import { replicaChangeOf } from './replica-change.js';
import type { DiskForecast, RunBlocker, RunForecast } from './run-forecast.js';

/** What {@link forecastRun} reads from. It writes nothing to any of them. */
export interface ForecastSources {
  store: StateStore;
  drivers: DriverRegistry;
  /** The job's target driver when it is not the registry's (a remote agent's); see `EngineOptions.targetDriver`. */
  targetDriver?: (job: JobSpec) => Hypervisor | undefined | Promise<Hypervisor | undefined>;
  cache?: ReplicationCacheProvider;
  /** The block store of single-pass runs: asked whether the last backup version can still be inherited. */
  backup?: BackupSink;
  ruleSets?: readonly RuleSet[];
  /** The digest the run would use (its cache is keyed by it). */
  digest: string;
}

/** Per disk, the tracker's answer for the interval since the base, and the pending extents when known. */
interface TrackerAnswer {
  state: DiskFacts['tracker'];
  extents?: Extent[];
}

/**
 * Tells what the next run of `job` would do without doing any of it: no snapshot, no lock, no
 * write to the state folder, the source or the replica. It gathers the same facts the run's plan
 * stage gathers (the tracker's answer comes from its `pending` record instead of a snapshot) and
 * plans each disk with {@link planDisk}; block counts are exact where the tracker has a pending
 * record, and estimated from the job's past runs elsewhere.
 */
export async function forecastRun(
  sources: ForecastSources,
  job: JobSpec,
  options: OperationOptions = {},
): Promise<RunForecast> {
  const { store } = sources;
  const signal = options.signal;
  const blockers: RunBlocker[] = [];
  const warnings: RunForecast['warnings'] = [];
  const unfinished = await findUnfinished(store, job.name);
  if (unfinished) {
    blockers.push({
      code: 'RUN_UNFINISHED',
      message: `run ${unfinished.runId} did not finish (stopped in '${unfinished.state}'); resume it or roll it back first`,
    });
  }
  const history = await store.loadJob(job.name);
  const validation = validateJob(job, {
    ruleSets: sources.ruleSets ?? defaultRuleSets(),
    ...(history ? { history: { method: history.method } } : {}),
  });
  for (const violation of validation.violations) {
    if (violation.severity === 'error') {
      blockers.push({ code: 'RULE_BROKEN', message: `${violation.ruleId}: ${violation.message}` });
    } else warnings.push({ code: 'W_RULE', message: `${violation.ruleId}: ${violation.message}` });
  }
  const runs = history ? (await store.listRuns()).filter((r) => r.job.name === job.name) : [];
  const previous = runs.find((r) => r.runId === history?.lastCompletedRunId);

  const source = await sources.drivers.create(job.source, { side: 'source' });
  const target = (await sources.targetDriver?.(job)) ?? (await sources.drivers.create(job.target, { side: 'target' }));
  try {
    const vm = await source.getVM(job.source.vm, { signal });
    const replica = history?.replica;
    const seen = replica ? await replicaFacts(target, replica, history, blockers, signal) : undefined;
    const firstSeed = seen === undefined || seen.points.length === 0;
    const base = history?.baseSnapshot;
    const firstRun = firstSeed || !base;
    const { options: jobOptions } = job;
    const cache = jobOptions.replicationCache && jobOptions.direction !== 'pull' ? sources.cache : undefined;
    const lastBackup = history?.lastBackupVersion;
    const backupBaseUsable =
      jobOptions.singlePass === true &&
      lastBackup !== undefined &&
      (!sources.backup?.canInherit ||
        (await sources.backup.canInherit(
          {
            vm: vm.id,
            runId: 'forecast',
            blockSize: job.blockSize,
            disks: vm.disks.map((disk) => ({ id: disk.id, size: disk.size })),
            baseVersion: lastBackup,
          },
          { signal },
        )));
    const disks: DiskForecast[] = [];
    for (const [position, disk] of vm.disks.entries()) {
      const baseDisk = base?.disks[position];
      const sameDisk = baseDisk?.id === disk.id ? baseDisk : undefined;
      const blockCount = Math.ceil(disk.size / job.blockSize);
      const replicaDiskId = replica?.disks[position]?.id;
      let cacheFact: DiskFacts['cache'] = cache ? { status: 'missing' } : { status: 'off' };
      if (cache && !firstRun && replicaDiskId !== undefined && seen) {
        const opened = await cache.open(
          { job: job.name, diskId: replicaDiskId },
          { blockSize: job.blockSize, blockCount, digest: sources.digest, fingerprint: seen.fingerprint },
          { signal },
        );
        if (opened.status === 'ok') await opened.reader.close();
        cacheFact =
          opened.status === 'ok'
            ? { status: 'ok' }
            : opened.status === 'missing'
              ? { status: 'missing' }
              : { status: 'invalid', reason: opened.reason };
      }
      const before = previous?.disks.find((d) => d.sourceDiskId === disk.id);
      const tracker: TrackerAnswer =
        firstRun || !base ? { state: 'not-asked' } : await askPending(source, disk, base, before, signal);
      const plan = planDisk({
        forced: false,
        methodAlwaysFull: ALWAYS_FULL_METHODS.has(job.method),
        method: job.method,
        firstSeed,
        baseSnapshotMissing: !base,
        size: disk.size,
        baseSize: sameDisk?.size,
        backupBaseMissing:
          jobOptions.singlePass === true && (firstRun || seen?.modified !== undefined || !backupBaseUsable),
        replicaModified: seen?.modified,
        direction: jobOptions.direction,
        cacheRequested: jobOptions.replicationCache === true,
        cache: cacheFact,
        tracker: tracker.state,
      });
      let blocksToRead = blockCount;
      let bytesToRead = disk.size;
      let blocksChanged = plan.mode === 'full' ? blockCount : (before?.stats.blocksChanged ?? blockCount);
      let basis: DiskForecast['basis'] = 'estimate';
      if (plan.mode === 'tracked') {
        if (tracker.extents) {
          const ranges = await toBlockRanges(toAsync(tracker.extents), job.blockSize, blockCount, 0, {
            signal,
            mergeGap: 0,
          });
          blocksToRead = countBlocks(ranges);
          bytesToRead = countBytes(ranges, job.blockSize, disk.size);
          blocksChanged = blocksToRead;
          basis = 'exact';
        } else {
          blocksToRead =
            averageOf(
              runs,
              disk.id,
              (d) => d.mode === 'tracked',
              (d) => d.stats.blocksScanned,
            ) ?? 0;
          bytesToRead = Math.min(disk.size, blocksToRead * job.blockSize);
          blocksChanged = blocksToRead;
        }
      }
      const sentPerBlock = averageOf(
        runs,
        disk.id,
        (d) => d.stats.blocksChanged > 0,
        (d) => d.stats.bytesSent / d.stats.blocksChanged,
      );
      disks.push({
        id: disk.id,
        size: disk.size,
        mode: plan.mode,
        ...(plan.digestSource ? { digestSource: plan.digestSource } : {}),
        reason: plan.reason,
        blocksToRead,
        bytesToRead,
        blocksChanged,
        // Without past runs a changed block sends its bytes: never more than the blocks read hold
        // (a disk's last block, or a block bigger than the disk, is short).
        bytesToSend: Math.round(
          sentPerBlock === undefined
            ? Math.min(blocksChanged * job.blockSize, bytesToRead)
            : blocksChanged * sentPerBlock,
        ),
        basis,
      });
    }
    const bytesToRead = disks.reduce((sum, d) => sum + d.bytesToRead, 0);
    const bytesToSend = disks.reduce((sum, d) => sum + d.bytesToSend, 0);
    const throughput = pastThroughput(runs);
    const retention = job.options.retention;
    const points = seen?.points ?? [];
    const excess = points.length + 1 - retention;
    return {
      job: job.name,
      canRun: blockers.length === 0,
      blockers,
      warnings,
      disks,
      bytesToRead,
      bytesToSend,
      ...(throughput ? { throughput, etaSeconds: bytesToRead / throughput.bytesPerSecond } : {}),
      restorePoints: { create: 1, prune: excess > 0 ? points.slice(0, excess).map((p) => p.id) : [] },
    };
  } finally {
    await source.close().catch(() => undefined);
    await target.close().catch(() => undefined);
  }
}

/** The replica's state as the run's prepare stage would find it; adds the blockers it finds. */
async function replicaFacts(
  target: Hypervisor,
  replica: Replica,
  history: JobRecord | undefined,
  blockers: RunBlocker[],
  signal: AbortSignal | undefined,
): Promise<{ points: RestorePoint[]; fingerprint: string; modified: DiskFacts['replicaModified'] } | undefined> {
  let info: Awaited<ReturnType<Hypervisor['getVM']>>;
  try {
    info = await target.getVM(replica.id, { signal });
  } catch (error) {
    if (isReplikitError(error, 'E_NOT_FOUND')) return undefined; // gone: the run seeds a new one
    throw error;
  }
  if (info.powerState === 'running') {
    blockers.push({
      code: 'REPLICA_RUNNING',
      message: `replica '${replica.name}' is running; shut it down (or fail over properly) before replicating into it`,
    });
  }
  const owner = await target.replicaOwner(replica, { signal });
  if (owner) {
    blockers.push({
      code: 'REPLICA_HELD',
      message: `replica '${replica.name}' is held by run ${owner.runId} (pid ${owner.pid} on ${owner.host}): a run is in progress on it`,
    });
  }
  const points = await target.listRestorePoints(replica, { signal });
  const state = await target.replicaState(replica, { signal });
  const modified =
    history?.replicaFingerprint !== undefined && state.value !== history.replicaFingerprint
      ? replicaChangeOf(history.replicaFingerprintDetails, state.details)
      : undefined;
  return { points, fingerprint: state.value, modified };
}

/** The tracker's answer from its pending record; without one, what the last run found. */
async function askPending(
  source: Hypervisor,
  disk: { id: string; vmId: string; size: number },
  base: NonNullable<JobRecord['baseSnapshot']>,
  before: DiskRecord | undefined,
  signal: AbortSignal | undefined,
): Promise<TrackerAnswer> {
  const tracker = source.changeTracker;
  if (!tracker) return { state: 'unavailable' };
  const trackedBefore = before?.mode === 'tracked' || before?.reason?.code === 'TRACKING_RESET';
  if (!tracker.pending) return { state: trackedBefore ? 'ok' : 'unavailable' };
  const pending = await tracker.pending(disk, base, { signal });
  if (!pending) return { state: trackedBefore ? 'reset' : 'unavailable' };
  const extents: Extent[] = [];
  for await (const extent of pending) extents.push(extent);
  return { state: 'ok', extents };
}

async function* toAsync(extents: Extent[]): AsyncIterable<Extent> {
  yield* extents;
}

/** The mean of `value` over the matching disk of completed runs, or undefined when none match. */
function averageOf(
  runs: readonly RunJournal[],
  diskId: string,
  match: (disk: DiskRecord) => boolean,
  value: (disk: DiskRecord) => number,
): number | undefined {
  const values = runs
    .filter((run) => run.state === 'completed')
    .flatMap((run) => run.disks.filter((disk) => disk.sourceDiskId === diskId && match(disk)))
    .map(value);
  return values.length === 0 ? undefined : values.reduce((a, b) => a + b, 0) / values.length;
}

/** Source bytes read per second of transfer, over the job's completed runs that measured it. */
function pastThroughput(runs: readonly RunJournal[]): RunForecast['throughput'] {
  let bytes = 0;
  let ms = 0;
  let count = 0;
  for (const run of runs) {
    if (run.state !== 'completed') continue;
    const start = run.history.find((h) => h.state === 'transfer')?.at;
    const end = run.history.find((h) => h.state === 'commit')?.at;
    if (!start || !end) continue;
    const took = Date.parse(end) - Date.parse(start);
    if (!(took > 0) || run.stats.bytesRead === 0) continue;
    bytes += run.stats.bytesRead;
    ms += took;
    count++;
  }
  return count === 0 ? undefined : { bytesPerSecond: (bytes / ms) * 1000, runs: count };
}
