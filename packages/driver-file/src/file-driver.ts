import { createHash, randomBytes } from 'node:crypto';
import { readdir, rename, rm, stat } from 'node:fs/promises';
import { isAbsolute, join, resolve } from 'node:path';
import {
  AbstractHypervisor,
  type Capabilities,
  type ClaimOptions,
  type CloneInfo,
  type CloneOptions,
  ConflictError,
  type DiskReader,
  type DiskRef,
  type DiskWriter,
  type Extent,
  type Hypervisor,
  InputError,
  isReplikitError,
  type LiveDisk,
  NotFoundError,
  type OperationOptions,
  type Replica,
  type ReplicaFailoverMark,
  type ReplicaFingerprint,
  ReplicaInProgressError,
  type ReplicaOwner,
  type ReplicaSpec,
  type ReplikitError,
  type RestorePoint,
  type RestorePointOptions,
  type RevertOptions,
  type Snapshot,
  throwIfAborted,
  toStorageError,
  type VMInfo,
  type WriterOptions,
} from '@replikit/core';
import { fsyncDir } from './atomic-write.js';
import { openChainReader } from './chain-reader.js';
import { chainChanges } from './change-tracker.js';
import { createVmFolder } from './create-file-vm.js';
import {
  assertNotFailedOver,
  cloneRestorePoint,
  commitFailover,
  demoteReplica,
  destroyClone,
  failoverMarkOf,
  listClones,
  promoteReplica,
  retireReplica,
} from './failover-ops.js';
import { acquireLockFile, folderMutex, snapshotMutex } from './locks.js';
import { assertSafeName, isSafeName } from './names.js';
import {
  assertInsideRoot,
  confinedRoot,
  diskImagePath,
  diskLockPath,
  type FileVmPaths,
  fileVmPaths,
  overlayPath,
  rootFromMeta,
} from './paths.js';
import { pendingChanges } from './pending-changes.js';
import { assertRawImage } from './raw-image-check.js';
import { openRawReader } from './raw-reader.js';
import { openDirectWriter, openOverlayWriter } from './raw-writer.js';
import {
  assertNoMarker,
  assertReplica,
  commitReplica,
  type FaultHook,
  hasMarker,
  overlaySizes,
  pendingCommitPointId,
  recoverReplica,
  revertReplica,
  scanOverlay,
  withReplicaExclusive,
} from './replica-commit.js';
import { fenceClaim } from './replica-fence.js';
import { dropOverlay, dropOwner, readOverlayRun, readOwner, takeOwner, writeOverlayRun } from './replica-owner.js';
import { type PointRecord, readPoints } from './restore-points.js';
import { openLiveDisk, promotedChanges } from './reverse-ops.js';
import { deleteSnapshotOf, hasPendingMerge, recoverSnapshotMerge } from './snapshot-merge.js';
import {
  type ChainLayer,
  listSnapshotsOf,
  locateSnapshotChain,
  readSnapshotJsonText,
  takeSnapshot,
} from './snapshots.js';
import { checkDiskImages, checkImageSize, readVmJson, toVMInfo, type VmJson, writeVmJson } from './vm-metadata.js';

/** Options of {@link createFileDriver}. */
export interface FileDriverOptions {
  /** The folder holding one sub-folder per VM (and per replica unless placed elsewhere). */
  root: string;
  /**
   * Try copy-on-write clones (`COPYFILE_FICLONE_FORCE`) for snapshots before the sparse copy.
   * @default true
   */
  reflink?: boolean;
  /**
   * Called at named instants of commits and reverts. For crash tests only.
   * @internal
   */
  faultHook?: FaultHook;
  /**
   * Keep every replica and disk under `root`: a `meta.root` or `placement.root` naming another
   * folder is refused (`E_INPUT`, `details.confined`), and so is a VM folder that is a symbolic
   * link leading out of `root`. `replikit-agent` creates its driver this way, since the replica
   * references it receives come from a peer.
   * @default false
   */
  confine?: boolean;
}

/** The kind of the file driver. */
export const FILE_DRIVER_KIND = 'file';

/** What the file driver can do. */
export const FILE_DRIVER_CAPABILITIES: Capabilities = Object.freeze({
  methods: Object.freeze(['qhybrid']),
  canBeSource: true,
  canBeTarget: true,
  changeTracking: true,
  formats: Object.freeze(['raw']),
  restorePoints: true,
  failover: true,
  fencing: true,
});

/**
 * Creates the embedded file driver: a VM is a folder `<root>/<name>/` holding `vm.json` and raw
 * disk images; snapshots, replicas, restore points and modification detection all live on the
 * local file system, crash-safely.
 *
 * Replica writes go straight into the images until the replica has its first restore point
 * ("direct mode"), then into a per-disk append-only overlay that a commit applies (with undo files
 * kept for older restore points). See the package README for the on-disk layout.
 *
 * @example
 * ```ts
 * import { createFileDriver, createFileVM } from '@replikit/driver-file';
 *
 * await createFileVM('/tmp/vms', { name: 'web', disks: [{ id: 'system', size: 64 * 1024 ** 2 }] });
 * const hv = createFileDriver({ root: '/tmp/vms' });
 * const snap = await hv.snapshot('web', 'run-1');
 * const reader = await hv.openReader(snap.disks[0]!);
 * for await (const extent of reader.allocated()) console.log(extent);
 * await reader.close();
 * ```
 *
 * `close()` closes the readers and writers still open. Data of deleted snapshots that is still being
 * unlinked in the background (freeing a large image's extents takes the file system up to a second)
 * goes on being removed: a run does not wait for it, and its fsyncs would otherwise queue behind it.
 * The removals keep the process alive until they end; one cut short leaves a `.deleting-` entry that
 * the next snapshot of the VM removes. `settleDiscards()` (exported by this package) waits for them.
 */
export function createFileDriver(options: FileDriverOptions): Hypervisor {
  if (typeof options?.root !== 'string' || options.root.length === 0 || options.root.includes('\0')) {
    throw new InputError('createFileDriver: options.root must be a folder path');
  }
  return new FileDriver(options);
}

/**
 * The file driver on core's {@link AbstractHypervisor}: the base checks state, arguments (ids go
 * through {@link assertSafeName}, since they become folder names), signals and hands readers and
 * writers out; the hooks below only touch the file system.
 */
class FileDriver extends AbstractHypervisor {
  readonly kind = FILE_DRIVER_KIND;
  readonly capabilities = FILE_DRIVER_CAPABILITIES;
  private readonly root: string;
  private readonly reflink: boolean;
  private readonly faultHook: FaultHook | undefined;
  private readonly confine: boolean;

  constructor(options: FileDriverOptions) {
    super();
    this.root = resolve(options.root);
    this.reflink = options.reflink ?? true;
    this.faultHook = options.faultHook;
    this.confine = options.confine === true;
  }

  protected override _checkId(value: unknown, what: string): string {
    return assertSafeName(value, what);
  }

  /** File-system errors become `E_IO`, `E_NO_SPACE` or `E_NOT_FOUND`; anything else `E_DRIVER`. */
  protected override _wrapError(error: unknown, what: string, signal?: AbortSignal): ReplikitError {
    const errno = (error as NodeJS.ErrnoException | undefined)?.code;
    if (typeof errno === 'string' && !signal?.aborted) return toStorageError(error, what);
    return super._wrapError(error, what, signal);
  }

  protected async _listVMs(options?: OperationOptions): Promise<VMInfo[]> {
    let entries: string[];
    try {
      entries = (await readdir(this.root)).filter(isSafeName).sort();
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new NotFoundError(`the file driver's root folder ${this.root} does not exist; create it or fix the path`);
      }
      throw toStorageError(error, `listing ${this.root}`);
    }
    const vms: VMInfo[] = [];
    for (const entry of entries) {
      throwIfAborted(options?.signal);
      const paths = fileVmPaths(this.root, entry);
      if (!(await stat(paths.vmJson).catch(() => undefined))) continue; // not a VM folder
      vms.push(await this.describe(paths, entry));
    }
    return vms;
  }

  protected override async _getVM(idOrName: string, options?: OperationOptions): Promise<VMInfo> {
    const paths = fileVmPaths(this.root, idOrName);
    try {
      return await this.describe(paths, idOrName);
    } catch (error) {
      if (!isReplikitError(error, 'E_NOT_FOUND')) throw error;
      const byName = await this.findByName(idOrName, options);
      if (byName) return byName;
      throw new NotFoundError(
        `no VM '${idOrName}' under ${this.root} (no folder ${paths.dir}, and no vm.json names it)`,
        {
          cause: error,
          details: { path: paths.dir },
        },
      );
    }
  }

  protected override async _snapshot(vmId: string, label: string, options?: OperationOptions): Promise<Snapshot> {
    const paths = fileVmPaths(this.root, vmId);
    const vm = await readVmJson(paths.dir);
    const take = () =>
      snapshotMutex.run(paths.dir, () =>
        takeSnapshot(paths, vmId, vm, label, {
          signal: options?.signal,
          reflink: this.reflink,
          faultHook: this.faultHook,
        }),
      );
    if (!vm.replica) return take();
    // A replica's images hold its last restore point; no commit or revert may run while they are copied.
    await recoverReplica(paths, { faultHook: this.faultHook });
    await assertNoMarker(paths, vm);
    const lock = await acquireLockFile(paths.replicaLock, `replica '${vmId}' (a commit or revert is running)`);
    try {
      return await take();
    } finally {
      await lock.release();
    }
  }

  protected override async _listSnapshots(vmId: string): Promise<Snapshot[]> {
    const paths = fileVmPaths(this.root, vmId);
    await readVmJson(paths.dir);
    return snapshotMutex.run(paths.dir, async () => {
      if (await hasPendingMerge(paths)) {
        try {
          await recoverSnapshotMerge(paths, vmId, this.faultHook);
        } catch (error) {
          // Another process holds the VM (and is probably finishing it): list what is there.
          if (!isReplikitError(error, 'E_CONFLICT')) throw error;
        }
      }
      return listSnapshotsOf(paths, vmId);
    });
  }

  protected override async _deleteSnapshot(snapshot: Snapshot, keepMetadata: boolean): Promise<void> {
    const paths = fileVmPaths(this.root, snapshot.vmId);
    await snapshotMutex.run(paths.dir, () =>
      deleteSnapshotOf(
        paths,
        snapshot.vmId,
        snapshot.id,
        keepMetadata,
        this.faultHook,
        (snapshotId) => openSnapshotReaders.get(`${paths.dir}\0${snapshotId}`) ?? 0,
      ),
    );
  }

  /** The live disk's writes since `base`, from the dirty bitmap, without a snapshot (see `pendingChanges`). */
  protected override _pending(
    disk: DiskRef,
    base: Snapshot,
    options?: OperationOptions,
  ): Promise<AsyncIterable<Extent> | undefined> {
    return pendingChanges(fileVmPaths(this.root, base.vmId), disk, base, options);
  }

  protected override async _changes(
    disk: DiskRef,
    base: Snapshot,
    current: Snapshot,
    options?: OperationOptions,
  ): Promise<AsyncIterable<{ offset: number; length: number }> | undefined> {
    const paths = fileVmPaths(this.root, current.vmId);
    return snapshotMutex.run(paths.dir, async () => {
      await recoverSnapshotMerge(paths, current.vmId, this.faultHook);
      return chainChanges(paths, disk, base, current, options);
    });
  }

  private async openSnapshotReader(paths: FileVmPaths, disk: DiskRef): Promise<DiskReader> {
    return snapshotMutex.run(paths.dir, async () => {
      await recoverSnapshotMerge(paths, disk.vmId, this.faultHook);
      const what = `disk '${disk.id}' of snapshot '${disk.snapshotId}' of VM '${disk.vmId}'`;
      for (let attempt = 0; ; attempt++) {
        const { layers, size } = await locateSnapshotChain(paths, disk);
        assertSameSize(disk, size);
        const top = layers[0]!;
        const reader =
          layers.length === 1
            ? await openRawReader(top.path, size, { ...(top.map ? { map: top.map } : {}), what })
            : await openChainReader(layers, size, what);
        // Another process may have merged this chain while it was opened: keep the reader only if
        // nothing moved (open file handles keep their content through a later merge).
        if (await chainUnchanged(paths, disk.vmId, layers)) return trackReader(reader, paths.dir, top.snapshotId);
        await reader.close();
        if (attempt >= 2) {
          throw new ConflictError(`${what} is being merged by another process; retry when it is done`);
        }
      }
    });
  }

  protected override async _openReader(disk: DiskRef): Promise<DiskReader> {
    const paths = await this.pathsOf(disk.meta, disk.vmId, `disk '${disk.id}'`);
    if (disk.snapshotId !== undefined) return this.openSnapshotReader(paths, disk);
    let vm = await readVmJson(paths.dir);
    if (vm.replica) {
      await recoverReplica(paths, { faultHook: this.faultHook });
      vm = await readVmJson(paths.dir);
      await assertNoMarker(paths, vm);
    }
    const found = findDisk(vm, disk.id, disk.vmId);
    const path = diskImagePath(paths.dir, found.file);
    await checkImageSize(path, found.id, found.size);
    if (!vm.replica) await assertRawImage(path, found.id);
    assertSameSize(disk, found.size);
    return openRawReader(path, found.size, {
      what: `disk '${disk.id}' of ${vm.replica ? 'replica' : 'VM'} '${disk.vmId}'`,
    });
  }

  protected override async _ensureReplica(spec: ReplicaSpec): Promise<Replica> {
    const name = spec.name;
    const placementRoot = spec.placement?.root;
    if (placementRoot !== undefined && (typeof placementRoot !== 'string' || !isAbsolute(placementRoot))) {
      throw new InputError(`placement.root must be an absolute folder path, got ${JSON.stringify(placementRoot)}`);
    }
    let root = placementRoot === undefined ? this.root : resolve(placementRoot);
    if (this.confine) root = confinedRoot(root, this.root, `replica '${name}'`);
    const metaRoot = root === this.root ? undefined : root;
    const paths = fileVmPaths(root, name);
    if (this.confine) await assertInsideRoot(paths.dir, this.root);
    const wanted = specDisks(spec);
    for (let attempt = 0; ; attempt++) {
      let vm: VmJson;
      try {
        vm = await readVmJson(paths.dir);
      } catch (error) {
        if (!isReplikitError(error, 'E_NOT_FOUND')) throw error;
        if (await stat(paths.dir).catch(() => undefined)) {
          throw new ConflictError(`${paths.dir} exists but holds no vm.json; remove it or pick another replica name`);
        }
        const source = spec.source;
        const created: VmJson = {
          name,
          cpus: positive(source?.cpus, 'source.cpus'),
          memoryMiB: positive(source?.memoryMiB, 'source.memoryMiB'),
          ...(Array.isArray(source.networks) ? { networks: source.networks.map(String) } : {}),
          disks: wanted.map((d) => ({
            id: d.id,
            file: `${d.id}.raw`,
            size: d.size,
            ...(d.label ? { label: d.label } : {}),
          })),
          powerState: 'stopped',
          bootCount: 0,
          replica: { state: 'in-progress', writeGeneration: 0, sourceVm: String(source.id) },
        };
        try {
          await createVmFolder(root, paths.dir, created);
        } catch (createError) {
          if (attempt === 0 && isReplikitError(createError, 'E_CONFLICT')) continue; // created meanwhile
          throw createError;
        }
        return toReplica(name, created, true, metaRoot);
      }
      if (!vm.replica) {
        throw new ConflictError(
          `a VM named '${name}' exists at ${paths.dir} and is not a replica; pick another replica name`,
          { details: { dir: paths.dir } },
        );
      }
      const have = vm.disks.map((d) => d.size);
      if (have.length !== wanted.length || have.some((size, i) => size !== wanted[i]!.size)) {
        throw new ConflictError(
          `replica '${name}' has disks of [${have.join(', ')}] bytes but the job needs [${wanted.map((d) => d.size).join(', ')}]; ` +
            'delete the replica to seed it again, or point the job at another replica name',
          { details: { have, wanted: wanted.map((d) => d.size) } },
        );
      }
      // Another process may be committing it right now: it finishes its own commit.
      await this.softRecover(paths);
      return toReplica(name, vm, false, metaRoot);
    }
  }

  protected override async _deleteReplica(replica: Replica): Promise<void> {
    const paths = await this.replicaPaths(replica);
    let vm: VmJson;
    try {
      vm = await readVmJson(paths.dir);
    } catch (error) {
      if (isReplikitError(error, 'E_NOT_FOUND')) return; // already gone
      throw error;
    }
    assertReplica(paths, vm);
    await withReplicaExclusive(paths, vm, async () => {
      const parent = resolve(paths.dir, '..');
      const doomed = join(parent, `.deleting-${process.pid}-${replica.id}-${randomBytes(4).toString('hex')}`);
      try {
        await rename(paths.dir, doomed);
        await fsyncDir(parent);
        await rm(doomed, { recursive: true, force: true });
      } catch (error) {
        throw toStorageError(error, `deleting replica '${replica.id}'`);
      }
    });
  }

  protected override async _openWriter(replica: Replica, disk: DiskRef, options?: WriterOptions): Promise<DiskWriter> {
    const paths = await this.replicaPaths(replica);
    await recoverReplica(paths, { faultHook: this.faultHook });
    const vm = await readVmJson(paths.dir);
    assertReplica(paths, vm);
    const found = findDisk(vm, disk.id, replica.id);
    await checkImageSize(diskImagePath(paths.dir, found.file), found.id, found.size);
    const what = `disk '${found.id}' of replica '${replica.id}'`;
    const lock = await acquireLockFile(diskLockPath(paths.dir, found.file), what);
    const runId = options?.runId;
    try {
      assertNotFailedOver(vm, replica.id);
      await assertNoMarker(paths, vm);
      const owner = await readOwner(paths);
      if (owner && owner.runId !== runId) {
        throw new ConflictError(
          `replica '${replica.id}' is held by run ${owner.runId} (host ${owner.host}, pid ${owner.pid}); only that run writes it until it ends`,
          { details: { owner } },
        );
      }
      const points = await readPoints(paths.restorePoints);
      if (points.length === 0) {
        // Direct mode: the images are not a complete version until the first restore point.
        await folderMutex.run(paths.dir, async () => {
          const now = await readVmJson(paths.dir);
          if (now.replica?.state !== 'in-progress') {
            await writeVmJson(paths.dir, { ...now, replica: { ...now.replica!, state: 'in-progress' } });
          }
        });
        return await openDirectWriter({ path: diskImagePath(paths.dir, found.file), size: found.size, lock, what });
      }
      let { validEnd } = await scanOverlay(paths, found.file, found.size, false);
      if (validEnd > 0 && (await readOverlayRun(paths.dir, found.file)) !== runId) {
        // Writes another run (or session) left pending are never continued: they are dropped.
        await dropOverlay(paths.dir, found.file);
        validEnd = 0;
      }
      if (validEnd === 0) await writeOverlayRun(paths.dir, found.file, runId);
      return await openOverlayWriter({
        path: overlayPath(paths.dir, found.file),
        size: found.size,
        lock,
        what,
        validLength: validEnd,
      });
    } catch (error) {
      await lock.release();
      throw error;
    }
  }

  protected override async _replicaState(replica: Replica): Promise<ReplicaFingerprint> {
    const paths = await this.replicaPaths(replica);
    await this.softRecover(paths);
    const vm = await readVmJson(paths.dir);
    assertReplica(paths, vm);
    const disks: Array<Record<string, string>> = [];
    for (const disk of vm.disks) {
      const path = diskImagePath(paths.dir, disk.file);
      const s = await stat(path, { bigint: true }).catch((error: unknown) => {
        throw toStorageError(error, `reading the state of disk '${disk.id}' of replica '${replica.id}'`);
      });
      disks.push({
        id: disk.id,
        size: s.size.toString(),
        mtimeNs: s.mtimeNs.toString(),
        ctimeNs: s.ctimeNs.toString(),
        ino: s.ino.toString(),
        blocks: s.blocks.toString(),
      });
    }
    // Writes pending since the last restore point (whoever made them) are part of the state.
    const pending: Array<Record<string, string>> = [];
    for (const [file, size] of await overlaySizes(paths, vm)) {
      if (size > 0) pending.push({ file, size: String(size), run: (await readOverlayRun(paths.dir, file)) ?? '' });
    }
    const details = {
      bootCount: vm.bootCount,
      writeGeneration: vm.replica!.writeGeneration,
      disks,
      ...(pending.length > 0 ? { pending } : {}),
    };
    const value = createHash('sha256').update(JSON.stringify(details)).digest('hex');
    return { value, details };
  }

  protected override async _markReplica(replica: Replica, state: 'in-progress' | 'ready'): Promise<void> {
    const paths = await this.replicaPaths(replica);
    await recoverReplica(paths, { faultHook: this.faultHook });
    await folderMutex.run(paths.dir, async () => {
      const vm = await readVmJson(paths.dir);
      assertReplica(paths, vm);
      if (vm.replica!.state !== state) await writeVmJson(paths.dir, { ...vm, replica: { ...vm.replica!, state } });
    });
  }

  protected override async _claimReplica(
    replica: Replica,
    owner: ReplicaOwner,
    options?: ClaimOptions,
  ): Promise<ReplicaOwner> {
    const paths = await this.replicaPaths(replica);
    const current = await readVmJson(paths.dir);
    assertReplica(paths, current);
    assertNotFailedOver(current, replica.id);
    // A claim under a lease records its epoch first: older lease holders can no longer commit.
    await fenceClaim(paths, options?.fence, `the claim of replica '${replica.id}' by run ${owner.runId}`);
    const fresh = (await readOwner(paths))?.runId !== owner.runId;
    const holder = await takeOwner(paths, owner);
    if (holder.runId !== owner.runId) return holder;
    try {
      await recoverReplica(paths, { faultHook: this.faultHook });
      const vm = await readVmJson(paths.dir);
      // The holder never adopts writes it did not make: those pending from others are dropped.
      await withReplicaExclusive(paths, vm, async () => {
        for (const disk of vm.disks) {
          const { validEnd } = await scanOverlay(paths, disk.file, disk.size, false);
          if (validEnd > 0 && (await readOverlayRun(paths.dir, disk.file)) !== owner.runId) {
            await dropOverlay(paths.dir, disk.file);
          }
        }
      });
    } catch (error) {
      if (fresh) await dropOwner(paths, owner.runId).catch(() => undefined);
      throw error;
    }
    return holder;
  }

  protected override async _releaseReplica(replica: Replica, runId: string): Promise<void> {
    const paths = await this.replicaPaths(replica);
    if (!(await stat(paths.dir).catch(() => undefined))) return; // deleted with its hold
    await dropOwner(paths, runId);
  }

  protected override async _replicaOwner(replica: Replica): Promise<ReplicaOwner | undefined> {
    return readOwner(await this.replicaPaths(replica));
  }

  protected override async _replicaMark(replica: Replica): Promise<'in-progress' | 'ready'> {
    const paths = await this.replicaPaths(replica);
    await this.softRecover(paths);
    const vm = await readVmJson(paths.dir);
    assertReplica(paths, vm);
    return computeMark(paths, vm);
  }

  /** Idempotence per label and retention happen inside the commit (crash-safely), not in the base. */
  protected override async _createRestorePoint(
    replica: Replica,
    label: string,
    options?: RestorePointOptions,
  ): Promise<RestorePoint> {
    const paths = await this.replicaPaths(replica);
    const record = await commitReplica(paths, label, { ...options, faultHook: this.faultHook });
    return toRestorePoint(record, replica.id);
  }

  protected override async _listRestorePoints(replica: Replica): Promise<RestorePoint[]> {
    const paths = await this.replicaPaths(replica);
    await this.softRecover(paths);
    const vm = await readVmJson(paths.dir);
    assertReplica(paths, vm);
    const unfinished = await pendingCommitPointId(paths);
    return (await readPoints(paths.restorePoints))
      .filter((p) => p.id !== unfinished)
      .map((p) => toRestorePoint(p, replica.id));
  }

  protected override async _revertTo(replica: Replica, point: RestorePoint, options?: RevertOptions): Promise<void> {
    const paths = await this.replicaPaths(replica);
    await revertReplica(paths, point.id, {
      ...(options?.signal ? { signal: options.signal } : {}),
      ...(options?.fence ? { fence: options.fence } : {}),
      faultHook: this.faultHook,
    });
  }

  protected override async _power(vmId: string, op: 'start' | 'shutdown'): Promise<void> {
    const paths = fileVmPaths(this.root, vmId);
    if ((await readVmJson(paths.dir)).replica) await this.softRecover(paths);
    await folderMutex.run(paths.dir, async () => {
      const vm = await readVmJson(paths.dir);
      if (op === 'shutdown') {
        if (vm.powerState !== 'stopped') await writeVmJson(paths.dir, { ...vm, powerState: 'stopped' });
        return;
      }
      if (
        vm.replica &&
        (vm.replica.failover?.state === 'promoting' || (await computeMark(paths, vm)) === 'in-progress')
      ) {
        throw new ReplicaInProgressError(
          `replica '${vmId}' is being written by an unfinished run and must not start; finish the run with 'replikit resume <runId>' or roll it back to its last restore point, then start it`,
          { details: { vmId } },
        );
      }
      if (vm.powerState === 'running') throw new ConflictError(`VM '${vmId}' is already running; shut it down first`);
      await checkDiskImages(paths.dir, vm);
      await writeVmJson(paths.dir, { ...vm, powerState: 'running', bootCount: vm.bootCount + 1 });
    });
  }

  /** Clones the newest restore point into a stopped VM beside the replica (see `FailoverHooks`). */
  async cloneRestorePoint(replica: Replica, point: RestorePoint, options: CloneOptions): Promise<CloneInfo> {
    this._checkId(options?.name, 'clone name');
    return this.failoverCall(`cloning replica '${replica?.id}'`, options, async () =>
      cloneRestorePoint(await this.replicaPaths(replica), replica.id, point, options, this.failoverCtx()),
    );
  }

  /** Deletes a clone (see `FailoverHooks`). */
  async destroyClone(cloneId: string, options?: OperationOptions): Promise<void> {
    this._checkId(cloneId, 'clone id');
    return this.failoverCall(`deleting clone '${cloneId}'`, options, () =>
      destroyClone(this.root, cloneId, this.failoverCtx()),
    );
  }

  /** Lists clones under the driver's root (see `FailoverHooks`). */
  async listClones(replica?: Replica, options?: OperationOptions): Promise<CloneInfo[]> {
    return this.failoverCall('listing clones', options, async () =>
      listClones(replica ? resolve((await this.replicaPaths(replica)).dir, '..') : this.root, replica?.id),
    );
  }

  /** Promotes the replica at its newest point and starts it (see `FailoverHooks`). */
  async promoteReplica(replica: Replica, point: RestorePoint, options?: OperationOptions): Promise<void> {
    return this.failoverCall(`promoting replica '${replica?.id}'`, options, async () =>
      promoteReplica(await this.replicaPaths(replica), replica.id, point, this.failoverCtx()),
    );
  }

  /** Returns a promoted replica to its point (see `FailoverHooks`). */
  async demoteReplica(replica: Replica, options?: OperationOptions): Promise<void> {
    return this.failoverCall(`undoing the failover of replica '${replica?.id}'`, options, async () =>
      demoteReplica(await this.replicaPaths(replica), replica.id, this.failoverCtx()),
    );
  }

  /** Makes a promotion final (see `FailoverHooks`). */
  async commitFailover(replica: Replica, options?: OperationOptions): Promise<void> {
    return this.failoverCall(`committing the failover of replica '${replica?.id}'`, options, async () =>
      commitFailover(await this.replicaPaths(replica), replica.id),
    );
  }

  /** Turns a committed replica into a plain VM (see `FailoverHooks`). */
  async retireReplica(replica: Replica, options?: OperationOptions): Promise<void> {
    return this.failoverCall(`retiring replica '${replica?.id}'`, options, async () =>
      retireReplica(await this.replicaPaths(replica), replica.id),
    );
  }

  /** The replica's failover state (see `FailoverHooks`). */
  async failoverMark(replica: Replica, options?: OperationOptions): Promise<ReplicaFailoverMark> {
    return this.failoverCall(`reading the failover state of replica '${replica?.id}'`, options, async () =>
      failoverMarkOf(await this.replicaPaths(replica)),
    );
  }

  /** The promoted replica's changes since its promotion (see `FailoverHooks`). */
  async promotedChanges(replica: Replica, diskId: string, options?: OperationOptions): Promise<Extent[] | undefined> {
    return this.failoverCall(`reading the changes of promoted replica '${replica?.id}'`, options, async () =>
      promotedChanges(await this.replicaPaths(replica), replica.id, diskId),
    );
  }

  /** Opens a VM's live disk for reverse replication (see `FailoverHooks`). */
  async openLiveDisk(
    vmId: string,
    diskId: string,
    mode: 'read' | 'write',
    options?: OperationOptions,
  ): Promise<LiveDisk> {
    this._checkId(vmId, 'VM id');
    return this.failoverCall(`opening disk '${diskId}' of VM '${vmId}'`, options, async () =>
      openLiveDisk(this.root, fileVmPaths(this.root, vmId), vmId, diskId, mode),
    );
  }

  /** Stops a VM at once: for a file VM the same as a shutdown. */
  async powerOff(vmId: string, options?: OperationOptions): Promise<void> {
    return this.power(vmId, 'shutdown', options);
  }

  private failoverCtx() {
    return { reflink: this.reflink, faultHook: this.faultHook };
  }

  /** Checks the signal, runs `fn`, and turns what is not a replikit error into one. */
  private async failoverCall<T>(what: string, options: OperationOptions | undefined, fn: () => Promise<T>): Promise<T> {
    throwIfAborted(options?.signal);
    try {
      return await fn();
    } catch (error) {
      if (isReplikitError(error)) throw error;
      throw this._wrapError(error, what, options?.signal);
    }
  }

  /** The VM whose vm.json has `name`; folders whose vm.json cannot be read are passed over. */
  private async findByName(name: string, options?: OperationOptions): Promise<VMInfo | undefined> {
    const entries = await readdir(this.root).catch((error: unknown) => {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw toStorageError(error, `listing ${this.root}`);
    });
    for (const entry of entries.filter(isSafeName).sort()) {
      throwIfAborted(options?.signal);
      const paths = fileVmPaths(this.root, entry);
      const vm = await readVmJson(paths.dir).catch(() => undefined);
      if (vm?.name === name) return this.describe(paths, entry);
    }
    return undefined;
  }

  private async describe(paths: FileVmPaths, id: string): Promise<VMInfo> {
    let vm = await readVmJson(paths.dir);
    if (vm.replica && (await hasMarker(paths))) {
      await this.softRecover(paths);
      vm = await readVmJson(paths.dir);
    }
    await checkDiskImages(paths.dir, vm);
    return toVMInfo(id, vm);
  }

  /**
   * Finishes an interrupted commit or revert when it can; when it cannot right now (the disk is
   * still full, another process holds the replica), read-only calls go on: the marker left behind
   * makes the replica report `in-progress`, and the next writing call retries and reports the error.
   */
  private async softRecover(paths: FileVmPaths): Promise<void> {
    try {
      await recoverReplica(paths, { faultHook: this.faultHook });
    } catch (error) {
      if (!isReplikitError(error) || isReplikitError(error, 'E_FORMAT') || isReplikitError(error, 'E_INPUT'))
        throw error;
    }
  }

  private replicaPaths(replica: Pick<Replica, 'id' | 'meta'>): Promise<FileVmPaths> {
    return this.pathsOf(replica.meta, replica.id, `replica '${replica.id}'`);
  }

  /**
   * The paths of the VM folder `id` under the root a reference's `meta` names (or the driver's);
   * a confined driver refuses any other root and a folder that links out of its root.
   */
  private async pathsOf(meta: Record<string, unknown> | undefined, id: unknown, what: string): Promise<FileVmPaths> {
    if (!this.confine) return fileVmPaths(rootFromMeta(meta, this.root), id as string);
    const root = confinedRoot(rootFromMeta(meta, this.root), this.root, what);
    const paths = fileVmPaths(root, id as string);
    await assertInsideRoot(paths.dir, this.root);
    return paths;
  }
}

/** Open snapshot readers of this process, by `<VM folder>\0<snapshot id>`. */
const openSnapshotReaders = new Map<string, number>();

/** Counts `reader` in {@link openSnapshotReaders} until it is closed. */
function trackReader(reader: DiskReader, dir: string, snapshotId: string): DiskReader {
  const key = `${dir}\0${snapshotId}`;
  openSnapshotReaders.set(key, (openSnapshotReaders.get(key) ?? 0) + 1);
  let closed = false;
  const close = reader.close.bind(reader);
  reader.close = async () => {
    if (!closed) {
      closed = true;
      const left = (openSnapshotReaders.get(key) ?? 1) - 1;
      if (left > 0) openSnapshotReaders.set(key, left);
      else openSnapshotReaders.delete(key);
    }
    await close();
  };
  return reader;
}

/** True when no merge is pending and every layer's snapshot.json still reads as it did. */
async function chainUnchanged(paths: FileVmPaths, vmId: string, layers: ChainLayer[]): Promise<boolean> {
  if (await hasPendingMerge(paths)) return false;
  for (const layer of layers) {
    const now = await readSnapshotJsonText(paths, vmId, layer.snapshotId).catch(() => undefined);
    if (now?.text !== layer.text) return false;
  }
  return true;
}

/** `in-progress` when a marker or a pending overlay exists, else the vm.json state. */
async function computeMark(paths: FileVmPaths, vm: VmJson): Promise<'in-progress' | 'ready'> {
  if (await hasMarker(paths)) return 'in-progress';
  for (const size of (await overlaySizes(paths, vm)).values()) if (size > 0) return 'in-progress';
  return vm.replica?.state ?? 'ready';
}

function findDisk(vm: VmJson, diskId: string, vmId: string): VmJson['disks'][number] {
  const disk = vm.disks.find((d) => d.id === diskId);
  if (!disk) {
    throw new NotFoundError(
      `VM '${vmId}' has no disk '${diskId}' (it has ${vm.disks.map((d) => `'${d.id}'`).join(', ') || 'none'})`,
      {
        details: { vmId, diskId },
      },
    );
  }
  return disk;
}

function assertSameSize(ref: DiskRef, size: number): void {
  if (ref.size !== size) {
    throw new InputError(
      `disk '${ref.id}' of '${ref.vmId}' is ${size} bytes but the reference says ${ref.size}; get a fresh reference (getVM, snapshot, ensureReplica)`,
      { details: { declared: size, given: ref.size } },
    );
  }
}

/** The replica's disks (the base has checked ids, sizes and duplicates). */
function specDisks(spec: ReplicaSpec): Array<{ id: string; size: number; label?: string }> {
  return spec.disks.map((d) => ({
    id: d.sourceDiskId,
    size: d.size,
    ...(typeof d.label === 'string' ? { label: d.label } : {}),
  }));
}

function positive(value: unknown, what: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1) {
    throw new InputError(`replica spec: ${what} must be a whole number ≥ 1, got ${JSON.stringify(value)}`);
  }
  return value;
}

function toReplica(name: string, vm: VmJson, created: boolean, root: string | undefined): Replica {
  const info = toVMInfo(name, vm, root);
  return { id: name, name, disks: info.disks, created, ...(root === undefined ? {} : { meta: { root } }) };
}

function toRestorePoint(record: PointRecord, replicaId: string): RestorePoint {
  return { id: record.id, replicaId, label: record.label, createdAt: record.createdAt };
}
