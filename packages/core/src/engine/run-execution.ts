import { isAbsolute } from 'node:path';
import type { EventEmitter } from 'eventemitter3';
import pLimit from 'p-limit';
import type { BackupSession, BackupSink } from '../contracts/backup-sink.js';
import type { DiskReader, DiskRef } from '../contracts/disk.js';
import type { Hypervisor, Replica, ReplicaOwner, Snapshot } from '../contracts/hypervisor.js';
import type { CacheReader, CacheWriter, ReplicationCacheProvider } from '../contracts/replication-cache.js';
import type { BlockChannel, BlockDigest, DiskChannel, Transport } from '../contracts/transport.js';
import {
  ConflictError,
  InputError,
  isReplikitError,
  NotFoundError,
  ReplikitError,
  StateError,
  throwIfAborted,
} from '../errors.js';
import { replicaNameOf } from '../job/job-spec.js';
import type { RuleSet } from '../rules/rule.js';
import { assertValid, defaultRuleSets, validateJob } from '../rules/rule-validator.js';
import { TokenBucket } from '../util/token-bucket.js';
import type { WarningCode } from '../warnings.js';
import type { BlockHasher } from './block-hasher.js';
import { type BlockRange, countBlocks, countBytes, toBlockRanges } from './block-ranges.js';
import type { BufferShelf } from './buffer-shelf.js';
import { transferDisk } from './disk-transfer.js';
import type { DriverRegistry } from './driver-registry.js';
import type { EngineEvents } from './events.js';
import { FileStateStore } from './file-state-store.js';
import { ProgressReporter } from './progress-reporter.js';
import { heldByAnother, ownerOfRun, runIsAlive } from './replica-hold.js';
import { addStats, type DiskRecord, emptyStats, type JobRecord, type PlanMode, type RunRecord } from './run-record.js';
import { assertTransition, isTerminal, type RunOutcome, type RunState } from './run-state.js';
import { segmentBytes } from './segment-reader.js';
import type { StateStore } from './state-store.js';

/** What a run needs from the engine that started it. */
export interface RunDependencies {
  store: StateStore;
  drivers: DriverRegistry;
  events: EventEmitter<EngineEvents>;
  hasher: BlockHasher;
  transport: (target: Hypervisor, record: RunRecord, hasher: BlockHasher) => Transport | Promise<Transport>;
  /** The target driver of a job, when not the registry's (a remote agent's); see {@link EngineOptions.targetDriver}. */
  targetDriver?: (job: RunRecord['job']) => Hypervisor | undefined | Promise<Hypervisor | undefined>;
  cache?: ReplicationCacheProvider;
  backup?: BackupSink;
  ruleSets?: readonly RuleSet[];
  checkpointEveryMs: number;
  readAhead: number;
  /** Read buffers kept between disks and runs. */
  buffers: BufferShelf;
  /** Where the store journals runs, named in the owner record the run puts on its replica. */
  stateDir?: string;
}

/** Bytes per source read of tracked blocks (the segment reader's default), or one block when larger. */
const READ_BYTES = 1024 * 1024;
/** Bytes per source read of a scan, or one block when larger. */
const SCAN_READ_BYTES = 4 * 1024 * 1024;

/** Turns anything thrown into the `{ code, message }` a journal keeps. */
function describeError(error: unknown): { code: string; message: string } {
  if (isReplikitError(error)) return { code: error.code, message: error.message };
  return { code: 'E_INTERNAL', message: error instanceof Error ? error.message : String(error) };
}

/**
 * Drives one run through the state machine, from whatever state its journal holds to a terminal
 * state. Every step is written so that running it again after a crash is safe: that is what
 * makes `resume` work.
 */
export class RunExecution {
  private source: Hypervisor | undefined;
  private target: Hypervisor | undefined;
  private saving: Promise<void> = Promise.resolve();
  private history: Promise<JobRecord | undefined> | undefined;
  private readonly progress: ProgressReporter;

  constructor(
    private readonly deps: RunDependencies,
    readonly record: RunRecord,
    private readonly signal: AbortSignal,
  ) {
    this.progress = new ProgressReporter(record, deps.events);
  }

  /**
   * Runs until the run ends. Resolves with the final record; rejects with the run's error.
   * `rollback` undoes the run's own writes; `abandon` ends it without reverting anything.
   */
  async drive(options: { rollback?: boolean; abandon?: boolean } = {}): Promise<RunRecord> {
    const record = this.record;
    let failure: unknown;
    const committed = record.state === 'cleanup' && record.outcome === 'completed';
    const resumedAfterPrepare = ['snapshot', 'plan', 'transfer', 'commit'].includes(record.state);
    if (options.abandon && !committed && !isTerminal(record.state)) {
      record.outcome = 'cancelled';
      record.abandoned = true;
      if (record.state === 'created') await this.transition('validate');
      if (record.state !== 'cleanup') await this.transition('cleanup');
    } else if (options.rollback && committed) {
      this.warn('W_ROLLBACK', `run ${record.runId} had already committed; it is finished instead of rolled back`);
    } else if (options.rollback && !isTerminal(record.state)) {
      record.outcome = 'cancelled';
      record.rolledBack = true;
      if (record.state !== 'cleanup') await this.transition('cleanup');
    }
    try {
      // A resumed run takes its replica again, and goes on only if nothing was committed meanwhile.
      if (resumedAfterPrepare && record.state !== 'cleanup') await this.holdForResume();
      while (!isTerminal(record.state) && record.state !== 'cleanup') {
        throwIfAborted(this.signal);
        await this.step(record.state);
      }
    } catch (error) {
      failure = error;
      record.outcome = isReplikitError(error, 'E_ABORTED') ? 'cancelled' : 'failed';
      record.error = describeError(error);
      if (record.state !== 'cleanup' && !isTerminal(record.state)) await this.transition('cleanup');
    }
    if (record.state === 'cleanup') {
      try {
        await this.cleanup(record.outcome ?? 'completed');
      } catch (error) {
        record.error = describeError(error);
        await this.save();
        await this.closeDrivers();
        throw error;
      }
      await this.closeDrivers();
      await this.transition(record.outcome ?? 'completed');
    } else {
      await this.closeDrivers();
    }
    if (failure !== undefined) throw failure;
    // A rollback or an abandon that did its work returns the record: the error that stopped the
    // run stays in its journal but is not the outcome of this call.
    if (record.outcome === 'failed' && record.error) {
      throw new ReplikitError(record.error.code as never, record.error.message, { details: { runId: record.runId } });
    }
    return record;
  }

  private async step(state: RunState): Promise<void> {
    switch (state) {
      case 'created':
        return this.transition('validate');
      case 'validate':
        await this.validate();
        return this.transition('prepare');
      case 'prepare':
        await this.prepare();
        return this.transition('snapshot');
      case 'snapshot':
        await this.takeSnapshot();
        return this.transition('plan');
      case 'plan':
        await this.plan();
        return this.transition('transfer');
      case 'transfer':
        await this.transfer();
        return this.transition('commit');
      case 'commit':
        await this.commit();
        this.record.outcome = 'completed';
        return this.transition('cleanup');
      default:
        throw new StateError(`run ${this.record.runId} cannot continue from state '${state}'`);
    }
  }

  // ── journal ──────────────────────────────────────────────────────────────────────────────

  private async transition(to: RunState): Promise<void> {
    const record = this.record;
    const from = record.state;
    assertTransition(from, to);
    const at = new Date().toISOString();
    record.state = to;
    record.history.push({ state: to, at });
    if (isTerminal(to)) record.finishedAt = at;
    // Each step journals what it did before doing what depends on it (the replica it created, the
    // snapshot it took, the plan, every checkpoint, the restore point), and a step started again
    // after a crash finds that. So entering a working state needs no save of its own (each costs
    // an fsync or two); the new state is written with the step's next save. Entering cleanup does:
    // it says whether the run committed (a rollback must not undo a committed run), as do the ends.
    if (to === 'cleanup' || isTerminal(to)) await this.save();
    this.deps.events.emit('state', { runId: record.runId, job: record.job.name, from, to, at });
  }

  /** Saves the record; saves are serialized so a slow one never overtakes a newer one. */
  private save(): Promise<void> {
    const record = this.record;
    const next = this.saving.then(() => {
      record.updatedAt = new Date().toISOString();
      record.pid = process.pid;
      return this.deps.store.saveRun(record);
    });
    this.saving = next.catch(() => undefined);
    return next;
  }

  private warn(code: WarningCode, message: string): void {
    this.record.warnings.push({ code, message });
    this.deps.events.emit('warning', { runId: this.record.runId, job: this.record.job.name, code, message });
  }

  /** What the store keeps of the job, read once per execution (the job lock keeps it unchanged). */
  private jobHistory(): Promise<JobRecord | undefined> {
    this.history ??= this.deps.store.loadJob(this.record.job.name);
    return this.history;
  }

  // ── drivers ──────────────────────────────────────────────────────────────────────────────

  private async drivers(): Promise<{ source: Hypervisor; target: Hypervisor }> {
    this.source ??= await this.deps.drivers.create(this.record.job.source, { side: 'source' });
    this.target ??=
      (await this.deps.targetDriver?.(this.record.job)) ??
      (await this.deps.drivers.create(this.record.job.target, { side: 'target' }));
    return { source: this.source, target: this.target };
  }

  private async closeDrivers(): Promise<void> {
    const all = [this.source, this.target];
    this.source = undefined;
    this.target = undefined;
    for (const driver of all) await driver?.close().catch(() => undefined);
  }

  // ── steps ────────────────────────────────────────────────────────────────────────────────

  private async validate(): Promise<void> {
    const job = this.record.job;
    const history = await this.jobHistory();
    const result = validateJob(job, {
      ruleSets: this.deps.ruleSets ?? defaultRuleSets(),
      ...(history ? { history: { method: history.method } } : {}),
    });
    for (const violation of result.violations) {
      if (violation.severity !== 'error') this.warn('W_RULE', `${violation.ruleId}: ${violation.message}`);
    }
    assertValid(result);
  }

  private async prepare(): Promise<void> {
    const record = this.record;
    const job = record.job;
    if (job.options.singlePass && !this.deps.backup) {
      throw new InputError(
        'options.singlePass needs a block store to record backup versions in; give the engine one (`backup: new FileBlockStore(dir)` from @replikit/dedup)',
      );
    }
    const { source, target } = await this.drivers();
    const history = await this.jobHistory();
    const vm = await source.getVM(job.source.vm, { signal: this.signal });
    const { driver: _driver, ...placement } = job.target;
    const replica = await target.ensureReplica(
      {
        name: replicaNameOf(job),
        source: vm,
        disks: vm.disks.map((disk) => ({
          sourceDiskId: disk.id,
          size: disk.size,
          ...(disk.label ? { label: disk.label } : {}),
        })),
        placement,
      },
      { signal: this.signal },
    );
    // On a resume, keep what the first pass learnt: the replica was created by this run.
    record.replicaCreated = (record.replicaCreated ?? false) || replica.created;
    record.replica = { ...replica, created: record.replicaCreated };
    const firstPass = record.restorePointBefore === undefined;
    // Read before the hold is taken: writes another session left pending count as a change.
    const fingerprint =
      firstPass && history?.replicaFingerprint && !replica.created
        ? (await target.replicaState(replica, { signal: this.signal })).value
        : undefined;
    await this.hold(target, replica);
    const replicaVm = await target.getVM(replica.id, { signal: this.signal });
    if (replicaVm.powerState === 'running') {
      throw new ConflictError(
        `replica '${replica.name}' is running; shut it down (or fail over properly) before replicating into it`,
      );
    }
    if (record.restorePointBefore === undefined) {
      const points = await target.listRestorePoints(replica, { signal: this.signal });
      record.restorePointBefore = points[points.length - 1] ?? null;
      record.baseSnapshot = history?.baseSnapshot;
      if (fingerprint !== undefined) {
        if (fingerprint !== history?.replicaFingerprint) {
          record.replicaModified = true;
          this.warn(
            'W_REPLICA_MODIFIED',
            `replica '${replica.name}' changed since the last run (booted, written outside replikit, or left with another session's pending writes, which are dropped); this run compares every block with it`,
          );
        }
      }
    }
    await this.save();
  }

  private async takeSnapshot(): Promise<void> {
    const record = this.record;
    if (record.snapshot) return;
    const { source } = await this.drivers();
    const label = `replikit-${record.runId}`;
    const vm = await source.getVM(record.job.source.vm, { signal: this.signal });
    // A crash between taking the snapshot and journaling it leaves one with our label: adopt it.
    const existing = (await source.listSnapshots(vm.id, { signal: this.signal })).find((s) => s.label === label);
    record.snapshot = existing ?? (await source.snapshot(vm.id, label, { signal: this.signal }));
    await this.save();
  }

  private async plan(): Promise<void> {
    const record = this.record;
    const snapshot = record.snapshot!;
    const replica = record.replica!;
    const { source, target } = await this.drivers();
    const firstRun = record.restorePointBefore === null || record.replicaCreated === true || !record.baseSnapshot;
    const options = record.job.options;
    const cache = options.replicationCache && options.direction !== 'pull' ? this.deps.cache : undefined;
    const fingerprint = cache && !firstRun ? (await target.replicaState(replica, { signal: this.signal })).value : '';
    if (fingerprint) record.replicaFingerprintAtPlan = fingerprint;
    if (options.singlePass) {
      // Blocks this run does not send are the previous version's, when the replica still holds it.
      const history = await this.jobHistory();
      const base = !firstRun && !record.replicaModified ? history?.lastBackupVersion : undefined;
      record.backup = base ? { baseVersion: base } : {};
    }
    // A backup version without a base needs every block: the source is read in full.
    const mayTrack = !options.singlePass || record.backup?.baseVersion !== undefined;
    record.disks = [];
    for (const [position, disk] of snapshot.disks.entries()) {
      const replicaDisk = replica.disks[position];
      if (!replicaDisk || replicaDisk.size !== disk.size) {
        throw new ConflictError(
          `replica '${replica.name}' disk ${position} does not match source disk '${disk.id}' (${disk.size} bytes); seed a new replica`,
        );
      }
      let mode: PlanMode = 'hash-diff';
      let digestSource: 'replica' | 'cache' | undefined;
      if (firstRun) mode = 'full';
      else {
        const trusted = cache ? await this.checkCache(cache, replicaDisk.id, disk.size, fingerprint) : undefined;
        // Tracked blocks only: alone, or compared with a trusted cache (which the run then carries
        // forward for the blocks it does not read). An untrusted cache is rebuilt by a verified diff.
        const canTrack = mayTrack && !record.replicaModified && (!cache || trusted === 'cache');
        if (canTrack && source.changeTracker && record.baseSnapshot) {
          const changes = await source.changeTracker.changes(disk, record.baseSnapshot, snapshot, {
            signal: this.signal,
          });
          if (changes) mode = 'tracked';
        }
        digestSource = mode === 'tracked' ? trusted : (trusted ?? 'replica');
      }
      record.disks.push({
        position,
        sourceDiskId: disk.id,
        replicaDiskId: replicaDisk.id,
        size: disk.size,
        mode,
        ...(digestSource ? { digestSource } : {}),
        writesCache: cache !== undefined,
        targetKnownZero: record.replicaCreated === true,
        checkpointBlock: 0,
        done: false,
        stats: emptyStats(),
      });
    }
    // From here on the replica is written: it must refuse to start until commit.
    record.replicaTouched = true;
    await this.save();
    await target.markReplica(replica, 'in-progress', { signal: this.signal });
  }

  private cacheKey(disk: { replicaDiskId: string }) {
    return { job: this.record.job.name, diskId: disk.replicaDiskId };
  }

  /** Decides whether a disk's replication cache can be trusted; says why not in a warning. */
  private async checkCache(
    cache: ReplicationCacheProvider,
    diskId: string,
    size: number,
    fingerprint: string,
  ): Promise<'cache' | 'replica'> {
    const record = this.record;
    const opened = await cache.open(
      { job: record.job.name, diskId },
      {
        blockSize: record.blockSize,
        blockCount: Math.ceil(size / record.blockSize),
        digest: record.digest,
        fingerprint,
      },
      { signal: this.signal },
    );
    if (opened.status === 'ok') {
      await opened.reader.close();
      return 'cache';
    }
    this.warn(
      opened.status === 'missing' ? 'W_CACHE_MISSING' : 'W_CACHE_DISCARDED',
      opened.status === 'missing'
        ? `disk '${diskId}' has no replication cache yet; this run reads the replica and writes one`
        : `the replication cache of disk '${diskId}' was discarded: ${opened.reason}; this run reads the replica (verified diff) and writes a new cache`,
    );
    return 'replica';
  }

  private async transfer(): Promise<void> {
    const record = this.record;
    const { source, target } = await this.drivers();
    // Idempotent on resume: a crash may have come before the mark was written.
    await target.markReplica(record.replica!, 'in-progress', { signal: this.signal });
    const transport = await this.deps.transport(target, record, this.deps.hasher);
    const channel = await transport.open(
      { runId: record.runId, replica: record.replica!, blockSize: record.blockSize, digest: record.digest },
      { signal: this.signal },
    );
    const inner = new AbortController();
    const signal = AbortSignal.any([this.signal, inner.signal]);
    const limit = pLimit(record.job.options.parallelDisks);
    const throttle = record.job.options.bandwidthLimit ? new TokenBucket(record.job.options.bandwidthLimit) : undefined;
    const digestOnWire = transport.name !== 'inprocess';
    const backup = await this.openBackup();
    this.progress.start();
    let firstError: unknown;
    const tasks = record.disks
      .filter((disk) => !disk.done)
      .map((disk) =>
        limit(async () => {
          try {
            await this.transferOne(source, disk, channel, { signal, throttle, digestOnWire, backup });
          } catch (error) {
            firstError ??= error;
            inner.abort(error);
          }
        }),
      );
    try {
      await Promise.all(tasks);
      if (firstError !== undefined) throw firstError;
    } finally {
      this.progress.stop();
      await channel.close().catch((error: unknown) => {
        firstError ??= error;
      });
      await backup?.close().catch((error: unknown) => {
        firstError ??= error;
      });
    }
    if (firstError !== undefined) throw firstError;
    this.sumStats();
    this.progress.emit(true);
  }

  private async transferOne(
    source: Hypervisor,
    disk: DiskRecord,
    channel: BlockChannel,
    options: {
      signal: AbortSignal;
      throttle: TokenBucket | undefined;
      digestOnWire: boolean;
      backup: BackupSession | undefined;
    },
  ): Promise<void> {
    const record = this.record;
    const snapshotDisk = record.snapshot!.disks[disk.position]!;
    const replicaDisk = record.replica!.disks[disk.position]!;
    const reader = await source.openReader(snapshotDisk, { signal: options.signal });
    try {
      const blockCount = Math.ceil(disk.size / record.blockSize);
      const ranges = await this.rangesFor(source, disk, snapshotDisk, reader.allocated({ signal: options.signal }));
      const examineAll = disk.mode === 'hash-diff' || (disk.mode === 'full' && !disk.targetKnownZero);
      if (disk.stats.blocksTotal === 0) {
        disk.stats.blocksTotal = examineAll ? blockCount : countBlocks(ranges);
        disk.stats.bytesTotal = examineAll ? disk.size : countBytes(ranges, record.blockSize, disk.size);
      }
      const diskChannel = await channel.openDisk(replicaDisk, { signal: options.signal });
      const tracked = disk.mode === 'tracked';
      // Tracked blocks prefetch their delta base with every segment: it is opened now. A scan
      // opens it when the first changed block needs it (one that finds no change never does).
      let deltaBase: Promise<DiskReader | undefined> | undefined;
      const openDeltaBase = () => {
        deltaBase ??= this.openDeltaBase(source, disk, diskChannel);
        return deltaBase;
      };
      const trackedBase = tracked ? await openDeltaBase() : undefined;
      const deltaBaseOptions = tracked
        ? trackedBase && { deltaBase: trackedBase, prefetchDeltaBase: true }
        : { deltaBase: openDeltaBase };
      const { reader: cacheReader, writer: cacheWriter } = await this.openCache(disk, blockCount);
      // Read buffers come from the engine's shelf (kept from earlier disks and runs), and go back
      // to it once the transfer is over. Tracked blocks are scattered: small segments, so more of
      // them are kept in flight. A scan reads larger segments: fewer messages to hashing threads.
      // Whole blocks per read, at least one, so a block larger than the read size is read whole.
      // Reads larger than planned (blocks of 2 MiB and more) are kept fewer in flight, for about
      // the planned bytes in flight, but always at least two reads ahead.
      const plannedBytes = tracked ? READ_BYTES : SCAN_READ_BYTES;
      const readBytes = segmentBytes(plannedBytes, record.blockSize);
      const plannedAhead = tracked ? this.deps.readAhead * 8 : this.deps.readAhead;
      const readAhead =
        readBytes > plannedBytes
          ? Math.min(plannedAhead, Math.max(2, Math.floor((plannedAhead * plannedBytes) / readBytes)))
          : plannedAhead;
      const shelf = this.deps.buffers;
      const hasher = this.deps.hasher;
      const buffers = shelf.take(hasher, readAhead + 2, readBytes);
      const baseBuffers = trackedBase ? shelf.take(hasher, readAhead + 2, readBytes) : undefined;
      try {
        let replicaDigests: AsyncIterable<BlockDigest> | undefined;
        const trackedWithCache = disk.mode === 'tracked' && cacheReader !== undefined;
        // Tracked blocks with a cache that reads at random and a writer that copies in bulk: the
        // cache is not walked block by block, only the tracked blocks' entries are looked up.
        const randomAccess =
          trackedWithCache && cacheReader.digestAt !== undefined && cacheWriter?.carry !== undefined
            ? {
                replicaDigestAt: (index: number) => cacheReader.digestAt!(index, { signal: options.signal }),
                carryDigests: async (from: number, to: number) => {
                  if (await cacheWriter.carry!(cacheReader, from, to)) return;
                  // This writer cannot copy from this reader: entry by entry.
                  for (let index = from; index < to; index++) {
                    await cacheWriter.append(index, await cacheReader.digestAt!(index, { signal: options.signal }));
                  }
                },
              }
            : undefined;
        if (!randomAccess && (disk.mode === 'hash-diff' || trackedWithCache)) {
          replicaDigests = cacheReader
            ? cacheReader.digests(disk.checkpointBlock, { signal: options.signal })
            : diskChannel.replicaDigests(disk.checkpointBlock, { signal: options.signal });
        }
        await transferDisk({
          record: disk,
          reader,
          channel: diskChannel,
          ranges,
          examineAll,
          ...(replicaDigests ? { replicaDigests } : {}),
          unchangedOutsideRanges: trackedWithCache,
          ...randomAccess,
          ...(cacheWriter
            ? { recordDigest: (index: number, digest: Uint8Array | null) => cacheWriter.append(index, digest) }
            : {}),
          // A scan compares and records a segment's digests per call where the cache can.
          ...(replicaDigests && cacheReader?.copyEntries
            ? {
                replicaDigestsInto: (target: Uint8Array, from: number, count: number) =>
                  cacheReader.copyEntries!(target, from, count),
              }
            : {}),
          ...(cacheWriter?.appendEntries
            ? {
                recordDigestEntries: (from: number, entries: Uint8Array) => cacheWriter.appendEntries!(from, entries),
              }
            : {}),
          ...(options.backup
            ? {
                backupPut: options.backup.disk(snapshotDisk.id).put,
                backupHasBase: record.backup?.baseVersion !== undefined,
              }
            : {}),
          ...deltaBaseOptions,
          beforeCheckpoint: async (count: number) => {
            await cacheWriter?.checkpoint(count);
            await options.backup?.checkpoint();
          },
          digestOnWire: options.digestOnWire,
          buffers,
          ...(baseBuffers ? { baseBuffers } : {}),
          readBytes,
          blockSize: record.blockSize,
          hasher,
          ...(options.throttle ? { throttle: options.throttle } : {}),
          signal: options.signal,
          checkpointEveryMs: this.deps.checkpointEveryMs,
          readAhead,
          onCheckpoint: async () => {
            this.sumStats();
            await this.save();
          },
          onProgress: () => this.progress.changed(),
        });
      } finally {
        // transferDisk has settled every read and send that used the buffers.
        shelf.give(hasher, buffers);
        if (baseBuffers) shelf.give(hasher, baseBuffers);
        await (await deltaBase)?.close().catch(() => undefined);
        await cacheReader?.close().catch(() => undefined);
        await cacheWriter?.close().catch(() => undefined);
        await diskChannel.close().catch(() => undefined);
      }
    } finally {
      await reader.close().catch(() => undefined);
    }
  }

  /** The previous snapshot's disk, for sending changed blocks as deltas, when it can serve. */
  private async openDeltaBase(
    source: Hypervisor,
    disk: DiskRecord,
    channel: DiskChannel,
  ): Promise<DiskReader | undefined> {
    const base = this.record.baseSnapshot?.disks[disk.position];
    const compared = disk.mode === 'hash-diff' || (disk.mode === 'tracked' && disk.digestSource === 'cache');
    if (!compared || !channel.sendDelta || !base || base.size !== disk.size) return undefined;
    return source.openReader(base, { signal: this.signal }).catch(() => undefined);
  }

  /** Starts (or continues) the single-pass backup version of this run. */
  private async openBackup(): Promise<BackupSession | undefined> {
    const record = this.record;
    if (!record.backup || !this.deps.backup) return undefined;
    const snapshot = record.snapshot!;
    return this.deps.backup.begin(
      {
        vm: snapshot.vmId,
        runId: record.runId,
        blockSize: record.blockSize,
        disks: snapshot.disks.map((disk) => ({ id: disk.id, size: disk.size })),
        ...(record.backup.baseVersion ? { baseVersion: record.backup.baseVersion } : {}),
      },
      { signal: this.signal },
    );
  }

  /** Opens the trusted cache a disk reads and the new cache it writes, falling back when they are gone. */
  private async openCache(
    disk: DiskRecord,
    blockCount: number,
  ): Promise<{ reader: CacheReader | undefined; writer: CacheWriter | undefined }> {
    const cache = this.deps.cache;
    const record = this.record;
    let reader: CacheReader | undefined;
    let writer: CacheWriter | undefined;
    if (!cache) {
      disk.digestSource = disk.digestSource && 'replica';
      disk.writesCache = false;
      return { reader, writer };
    }
    if (disk.mode !== 'full' && disk.digestSource === 'cache') {
      const fingerprint = record.replicaFingerprintAtPlan ?? '';
      const opened = await cache.open(
        this.cacheKey(disk),
        { blockSize: record.blockSize, blockCount, digest: record.digest, fingerprint },
        { signal: this.signal },
      );
      if (opened.status === 'ok') reader = opened.reader;
      else if (disk.mode === 'tracked') {
        // The tracked blocks still go (whole); the cache cannot be carried forward without the old one.
        delete disk.digestSource;
        if (disk.writesCache) await cache.abortPending(this.cacheKey(disk), record.runId);
        disk.writesCache = false;
        this.warn(
          'W_CACHE_DISCARDED',
          `the replication cache of disk '${disk.replicaDiskId}' is no longer usable; this run sends every tracked block whole and the next one reads the replica`,
        );
      } else {
        disk.digestSource = 'replica';
        this.warn(
          'W_CACHE_DISCARDED',
          `the replication cache of disk '${disk.replicaDiskId}' is no longer usable; reading the replica`,
        );
      }
    }
    if (disk.writesCache) {
      writer = await cache.begin(
        this.cacheKey(disk),
        { runId: record.runId, blockSize: record.blockSize, blockCount, digest: record.digest },
        disk.checkpointBlock,
      );
      if (writer.resumedFrom < disk.checkpointBlock) {
        await writer.close();
        await cache.abortPending(this.cacheKey(disk), record.runId);
        writer = undefined;
        disk.writesCache = false;
        this.warn(
          'W_CACHE_LOST',
          `the new replication cache of disk '${disk.replicaDiskId}' was lost in the crash; the next run reads the replica`,
        );
      }
    }
    return { reader, writer };
  }

  private async rangesFor(
    source: Hypervisor,
    disk: DiskRecord,
    snapshotDisk: DiskRef,
    allocated: AsyncIterable<{ offset: number; length: number }>,
  ): Promise<BlockRange[]> {
    const blockSize = this.record.blockSize;
    const blockCount = Math.ceil(disk.size / blockSize);
    if (disk.mode === 'tracked') {
      const changes = await source.changeTracker!.changes(
        snapshotDisk,
        this.record.baseSnapshot!,
        this.record.snapshot!,
        {
          signal: this.signal,
        },
      );
      if (!changes)
        throw new StateError(`the change tracker no longer knows the changes of disk '${disk.sourceDiskId}'`);
      return toBlockRanges(changes, blockSize, blockCount, disk.checkpointBlock, { signal: this.signal, mergeGap: 0 });
    }
    return toBlockRanges(allocated, blockSize, blockCount, disk.checkpointBlock, { signal: this.signal });
  }

  private sumStats(): void {
    const total = emptyStats();
    for (const disk of this.record.disks) addStats(total, disk.stats);
    this.record.stats = total;
  }

  private async commit(): Promise<void> {
    const record = this.record;
    const { target } = await this.drivers();
    const replica = record.replica!;
    record.restorePoint = await target.createRestorePoint(replica, record.runId, {
      retention: record.job.options.retention,
      signal: this.signal,
    });
    await this.save();
    await target.markReplica(replica, 'ready', { signal: this.signal });
    const fingerprint = await target.replicaState(replica, { signal: this.signal });
    for (const disk of record.disks) {
      if (disk.writesCache && this.deps.cache) {
        await this.deps.cache.commitPending(this.cacheKey(disk), record.runId, fingerprint.value);
      }
    }
    if (record.backup && this.deps.backup) {
      const version = await this.deps.backup.commitPending(record.snapshot!.vmId, record.runId);
      if (version) record.backup.version = version.id;
      else
        this.warn(
          'W_BACKUP_LOST',
          `the backup version of run ${record.runId} was lost; the next single-pass run records a full one`,
        );
    }
    const previous = await this.jobHistory();
    await this.deps.store.saveJob({
      ...previous,
      name: record.job.name,
      method: record.job.method,
      lastRunId: record.runId,
      lastCompletedRunId: record.runId,
      baseSnapshot: record.snapshot!,
      replica: { ...replica, created: false },
      replicaFingerprint: fingerprint.value,
      ...(record.backup ? { lastBackupVersion: record.backup.version } : {}),
      updatedAt: new Date().toISOString(),
    });
  }

  private async cleanup(outcome: RunOutcome): Promise<void> {
    const record = this.record;
    const { source, target } = await this.drivers();
    if (outcome === 'completed') {
      const base = record.baseSnapshot;
      if (base && base.id !== record.snapshot?.id) await this.dropSnapshot(source, base, true);
      await this.release(target);
      return;
    }
    for (const disk of record.disks) {
      if (disk.writesCache && this.deps.cache) await this.deps.cache.abortPending(this.cacheKey(disk), record.runId);
    }
    if (record.backup && this.deps.backup && record.snapshot) {
      await this.deps.backup.abortPending(record.snapshot.vmId, record.runId);
    }
    if (record.abandoned) await this.abandonReplica(target);
    else if (record.replicaTouched && record.replica) await this.rollBack(target, record.replica);
    if (record.snapshot) await this.dropSnapshot(source, record.snapshot, record.abandoned === true);
    await this.release(target);
  }

  // ── the replica's hold ───────────────────────────────────────────────────────────────────

  /**
   * Takes the replica for this run (its owner record on the target side), or fails with
   * `E_CONFLICT` naming the run that holds it. A hold left by a dead run of this same store whose
   * journal is gone or ended is taken over: nothing could ever resume that run.
   */
  private async hold(target: Hypervisor, replica: Replica): Promise<void> {
    const record = this.record;
    const owner = ownerOfRun(record, this.deps.stateDir);
    // The journal must name the run before its hold exists: a crash between the two leaves a
    // hold that `resume` can take again, never one no journal knows.
    await this.save();
    let holder = await target.claimReplica(replica, owner, { signal: this.signal });
    if (holder.runId !== record.runId && (await this.isStale(holder))) {
      await target.releaseReplica(replica, holder.runId, { signal: this.signal });
      holder = await target.claimReplica(replica, owner, { signal: this.signal });
    }
    if (holder.runId !== record.runId) {
      throw heldByAnother(replica.name, holder, `run ${record.runId} stopped before writing anything`);
    }
  }

  /**
   * True for the hold of a dead run (its process gone, on this host) that no journal lists as
   * unfinished: its state folder (this one, or the one its owner record names) no longer holds the
   * run, or holds it ended. Nothing could ever resume or abandon such a run, so its hold is taken
   * over. A journal that cannot be read keeps the hold: only a journal that says so frees it.
   */
  private async isStale(holder: { runId: string; pid: number; host: string; stateDir?: string }): Promise<boolean> {
    if (runIsAlive(holder.pid, holder.host) !== false) return false;
    const own = this.deps.stateDir !== undefined && holder.stateDir === this.deps.stateDir;
    if (!own && (holder.stateDir === undefined || !isAbsolute(holder.stateDir))) return false;
    const store = own ? this.deps.store : new FileStateStore(holder.stateDir!);
    let journal: RunRecord | undefined;
    try {
      journal = await store.loadRun(holder.runId);
    } catch {
      return own;
    }
    return journal === undefined || isTerminal(journal.state);
  }

  /** A resumed run takes its replica again; it goes on only from the restore point it started from. */
  private async holdForResume(): Promise<void> {
    const record = this.record;
    const replica = record.replica;
    if (!replica) return;
    const { target } = await this.drivers();
    // Taking the replica drops pending writes the driver cannot tell as this run's (a journal of
    // an older version, whose writes carry no run id); that changes the fingerprint. Then the
    // checkpoints no longer say what the replica holds: the transfer starts again.
    const wrote = record.disks.some((disk) => disk.checkpointBlock > 0 || disk.done);
    const pending = wrote ? (await target.replicaState(replica, { signal: this.signal })).value : undefined;
    await this.hold(target, replica);
    if (pending !== undefined && (await target.replicaState(replica, { signal: this.signal })).value !== pending) {
      this.restartTransfer();
    }
    const conflict = await this.newerPoint(target, replica);
    if (conflict) {
      throw new ConflictError(
        `${conflict}; run ${record.runId} can no longer finish: end it with \`replikit resume ${record.runId} --abandon\``,
        { details: { runId: record.runId } },
      );
    }
  }

  /** Forgets every checkpoint of the transfer: its writes were dropped, they are made again. */
  private restartTransfer(): void {
    const record = this.record;
    if (record.state === 'commit') {
      throw new ConflictError(
        `the writes run ${record.runId} left pending on replica '${record.replica?.name}' are gone (a journal of an older version?); roll the run back with \`replikit resume ${record.runId} --rollback\` and run the job again`,
      );
    }
    for (const disk of record.disks) {
      disk.checkpointBlock = 0;
      disk.done = false;
      disk.stats = emptyStats();
    }
    this.sumStats();
    this.warn(
      'W_TRANSFER_RESTARTED',
      `the writes run ${record.runId} left pending on replica '${record.replica?.name}' were not its own as far as the replica can tell (journaled by an older version?) and were dropped; the transfer starts again from the first block`,
    );
  }

  /**
   * Says why the replica is not where this run left it: a restore point this run did not make is
   * newer than its base, or its base is gone. `undefined` when the newest point is the base (or
   * this run's own).
   */
  private async newerPoint(target: Hypervisor, replica: Replica): Promise<string | undefined> {
    const record = this.record;
    const before = record.restorePointBefore;
    const points = await target.listRestorePoints(replica, { signal: this.signal });
    const newest = points.at(-1);
    if (newest?.label === record.runId) return undefined;
    if (before ? newest?.id === before.id : newest === undefined) return undefined;
    const base = before ? `restore point ${before.id}` : 'no restore point';
    const gone = before && !points.some((p) => p.id === before.id) ? ', which is gone' : '';
    return newest
      ? `replica '${replica.name}' has restore point ${newest.id} (of run ${newest.label}), newer than the one run ${record.runId} started from (${base}${gone})`
      : `replica '${replica.name}' no longer has ${base}, which run ${record.runId} started from`;
  }

  /**
   * Undoes this run's own writes, and nothing else: a replica held by another run is not touched,
   * and one that has a restore point newer than this run's base keeps it (only the writes this run
   * left pending are dropped). Either way the run then ends `failed`, with a warning saying why.
   */
  private async rollBack(target: Hypervisor, replica: Replica): Promise<void> {
    const record = this.record;
    let holder: ReplicaOwner;
    try {
      holder = await target.claimReplica(replica, ownerOfRun(record, this.deps.stateDir));
    } catch (error) {
      if (!isReplikitError(error, 'E_NOT_FOUND')) throw error;
      // The replica is gone: a run that created it had already removed it; another cannot be undone.
      if (record.restorePointBefore) this.endNotRolledBack(`run ${record.runId} found replica '${replica.name}' gone`);
      else record.rolledBack = true;
      return;
    }
    if (holder.runId !== record.runId) {
      this.endNotRolledBack(
        `run ${record.runId} did not roll replica '${replica.name}' back: ${heldByAnother(replica.name, holder).message}; what is on the replica is that run's`,
      );
      return;
    }
    const before = record.restorePointBefore;
    const points = await target.listRestorePoints(replica);
    const newest = points.at(-1);
    const ownNewest = newest?.label === record.runId;
    const hasBefore = before ? points.some((point) => point.id === before.id) : false;
    if (before && ownNewest && !hasBefore) {
      // The run's own restore point exists and retention already dropped the one before it:
      // the replica holds this run's complete version, which is kept.
      this.warn('W_ROLLBACK', `run ${record.runId} had committed its restore point; the replica keeps that version`);
      await target.markReplica(replica, 'ready');
    } else if (before && (newest?.id === before.id || (ownNewest && points.at(-2)?.id === before.id))) {
      await target.revertTo(replica, before);
      await target.markReplica(replica, 'ready');
      record.rolledBack = true;
    } else if (!before && points.every((point) => point.label === record.runId)) {
      // The replica never held a complete version: remove it rather than leave a partial one.
      await target.deleteReplica(replica).catch((error: unknown) => {
        if (!isReplikitError(error, 'E_NOT_FOUND')) throw error;
      });
      record.rolledBack = true;
    } else {
      // Returning to the newest point drops only what is pending: this run's writes (it holds the replica).
      if (newest) {
        await target.revertTo(replica, newest);
        await target.markReplica(replica, 'ready');
      }
      const why = (await this.newerPoint(target, replica)) ?? `replica '${replica.name}' moved on`;
      this.endNotRolledBack(
        `run ${record.runId} did not roll replica '${replica.name}' back: ${why}; reverting would lose it, so the replica keeps ${newest ? `that version (only this run's pending writes were dropped)` : 'what it has'}`,
      );
    }
  }

  /** Ends the run `failed`, saying in a warning and its error why its writes were not rolled back. */
  private endNotRolledBack(message: string): void {
    this.warn('W_NOT_ROLLED_BACK', message);
    this.record.outcome = 'failed';
    this.record.error = { code: 'E_CONFLICT', message };
  }

  /**
   * An abandoned run drops what is its own on the replica (its pending writes, when it holds the
   * replica) and leaves everything else as it is; it says what it did in a warning.
   */
  private async abandonReplica(target: Hypervisor): Promise<void> {
    const record = this.record;
    const replica = record.replica;
    if (!replica) {
      this.warn('W_ABANDONED', `run ${record.runId} was abandoned before it touched a replica`);
      return;
    }
    const holder = await target.replicaOwner(replica).catch((error: unknown) => {
      if (isReplikitError(error, 'E_NOT_FOUND')) return undefined;
      throw error;
    });
    if (holder?.runId !== record.runId) {
      const why = holder ? `it is held by run ${holder.runId}` : 'this run does not hold it';
      this.warn(
        'W_ABANDONED',
        `run ${record.runId} was abandoned; replica '${replica.name}' was left as it is (${why}) and no restore point was reverted`,
      );
      return;
    }
    const newest = (await target.listRestorePoints(replica)).at(-1);
    if (record.replicaTouched && newest) {
      await target.revertTo(replica, newest);
      await target.markReplica(replica, 'ready');
    }
    this.warn(
      'W_ABANDONED',
      `run ${record.runId} was abandoned: ${record.replicaTouched && newest ? `its pending writes on replica '${replica.name}' were dropped (the replica is at restore point ${newest.id}), ` : ''}its hold on the replica is released and no restore point was reverted`,
    );
  }

  /** Ends this run's hold on its replica (nothing when another run holds it, or it is gone). */
  private async release(target: Hypervisor): Promise<void> {
    const replica = this.record.replica;
    if (!replica) return;
    await target.releaseReplica(replica, this.record.runId).catch((error: unknown) => {
      if (!isReplikitError(error, 'E_NOT_FOUND')) throw error;
    });
  }

  private async dropSnapshot(source: Hypervisor, snapshot: Snapshot, warnOnly: boolean): Promise<void> {
    try {
      await source.deleteSnapshot(snapshot);
    } catch (error) {
      if (error instanceof NotFoundError) return;
      if (!warnOnly) throw error;
      this.warn('W_CLEANUP', `could not delete snapshot ${snapshot.id}: ${(error as Error).message}`);
    }
  }
}
