import { isAbsolute } from 'node:path';
import type { EventEmitter } from 'eventemitter3';
import type { BackupSink } from '../contracts/backup-sink.js';
import type { Hypervisor, Replica, ReplicaOwner, Snapshot } from '../contracts/hypervisor.js';
import type { ReplicationCacheProvider } from '../contracts/replication-cache.js';
import type { Transport } from '../contracts/transport.js';
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
import type { WarningCode } from '../warnings.js';
import type { BlockHasher } from './block-hasher.js';
import type { BufferShelf } from './buffer-shelf.js';
import type { DriverRegistry } from './driver-registry.js';
import type { EngineEvents } from './events.js';
import { FileStateStore } from './file-state-store.js';
import { replicaChangeOf } from './plan/replica-change.js';
import { ProgressReporter } from './progress-reporter.js';
import { heldByAnother, ownerOfRun, runIsAlive } from './replica-hold.js';
import { emptyStats, type JobRecord, type RunRecord } from './run-record.js';
import { assertTransition, isTerminal, type RunOutcome, type RunState } from './run-state.js';
import { commitStage } from './stages/commit-stage.js';
import { PlanStage } from './stages/plan-stage.js';
import { snapshotStage } from './stages/snapshot-stage.js';
import type { RunContext } from './stages/stage.js';
import { sumStats, TransferStage } from './stages/transfer-stage.js';
import { validateStage } from './stages/validate-stage.js';
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
  /** What the stages see of this execution. */
  private readonly context: RunContext;
  private readonly planning: PlanStage;

  constructor(
    private readonly deps: RunDependencies,
    readonly record: RunRecord,
    private readonly signal: AbortSignal,
  ) {
    this.progress = new ProgressReporter(record, deps.events);
    this.context = {
      record,
      deps,
      signal,
      drivers: () => this.drivers(),
      jobHistory: () => this.jobHistory(),
      save: () => this.save(),
      warn: (code, message) => this.warn(code, message),
    };
    this.planning = new PlanStage(this.context);
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
        await validateStage.run(this.context);
        return this.transition('prepare');
      case 'prepare':
        await this.prepare();
        return this.transition('snapshot');
      case 'snapshot':
        await snapshotStage.run(this.context);
        return this.transition('plan');
      case 'plan':
        await this.planning.run();
        return this.transition('transfer');
      case 'transfer':
        await new TransferStage(this.context, this.planning, this.progress).run();
        return this.transition('commit');
      case 'commit':
        await commitStage.run(this.context);
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
    const state =
      firstPass && history?.replicaFingerprint && !replica.created
        ? await target.replicaState(replica, { signal: this.signal })
        : undefined;
    const fingerprint = state?.value;
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
          record.replicaChange = replicaChangeOf(history?.replicaFingerprintDetails, state?.details);
          this.warn(
            'W_REPLICA_MODIFIED',
            `replica '${replica.name}' changed since the last run (booted, written outside replikit, or left with another session's pending writes, which are dropped); this run compares every block with it`,
          );
        }
      }
    }
    await this.save();
  }

  private sumStats(): void {
    sumStats(this.record);
  }

  private async cleanup(outcome: RunOutcome): Promise<void> {
    const record = this.record;
    // A run that stopped before it took a snapshot or found its replica left nothing on either side:
    // it ends without its drivers, so a driver that cannot be created (an agent that is down, a
    // wrong transport section) fails the run instead of leaving it unfinished in cleanup.
    const base = outcome === 'completed' ? record.baseSnapshot : undefined;
    const dropsBase = base !== undefined && base.id !== record.snapshot?.id;
    const needsDrivers = dropsBase || record.snapshot !== undefined || record.replica !== undefined;
    if (!needsDrivers) {
      if (record.abandoned) this.warn('W_ABANDONED', `run ${record.runId} was abandoned before it touched a replica`);
      if (outcome !== 'completed') await this.abortPendingStores();
      return;
    }
    const { source, target } = await this.drivers();
    if (outcome === 'completed') {
      if (dropsBase) await this.dropSnapshot(source, base, true);
      await this.release(target);
      return;
    }
    await this.abortPendingStores();
    if (record.abandoned) await this.abandonReplica(target);
    else if (record.replicaTouched && record.replica) await this.rollBack(target, record.replica);
    if (record.snapshot) await this.dropSnapshot(source, record.snapshot, record.abandoned === true);
    await this.release(target);
  }

  /** Drops what a failed run had begun writing into the replication caches and the block store. */
  private async abortPendingStores(): Promise<void> {
    const record = this.record;
    for (const disk of record.disks) {
      if (disk.writesCache && this.deps.cache)
        await this.deps.cache.abortPending(this.planning.cacheKey(disk), record.runId);
    }
    if (record.backup && this.deps.backup && record.snapshot) {
      await this.deps.backup.abortPending(record.snapshot.vmId, record.runId);
    }
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
