import {
  AbstractHypervisor,
  type Capabilities,
  type CloneInfo,
  type CloneOptions,
  ConflictError,
  type DiskReader,
  type DiskRef,
  type DiskWriter,
  DriverError,
  type Extent,
  type LiveDisk,
  NotFoundError,
  type OperationOptions,
  type Replica,
  type ReplicaFailoverMark,
  type ReplicaFingerprint,
  ReplicaInProgressError,
  type ReplicaOwner,
  type ReplicaSpec,
  type RestorePoint,
  type Snapshot,
  throwIfAborted,
  UnsupportedError,
  type WriterOptions,
} from '@replikit/core';
import type { ImageReader } from '@replikit/formats';
import { ChainReader } from './chain-reader.js';
import type { HyperVFailoverFaultHook } from './failover/failover-context.js';
import { HyperVFailover } from './failover/hyperv-failover.js';
import { writtenOver } from './failover/live-disk.js';
import { type HyperVHostFiles, LOCAL_HOST_FILES } from './host-files/host-files.js';
import {
  type CheckpointRow,
  coreMac,
  type DriveRow,
  diskLabel,
  diskRefOf,
  type FirmwareRow,
  firmwareOf,
  type HyperVVMInfo,
  type NicRow,
  powerStateOf,
  slotId,
  type VhdRow,
  type VmRow,
  versionHasRct,
} from './hyperv-records.js';
import type { PowerShellLink } from './powershell/powershell-link.js';
import { rctChangedExtents } from './rct/rct-changes.js';
import { ReferencePointStore, type StoredReferencePoint } from './rct/reference-points.js';
import {
  CHECKPOINT_VM,
  CONVERT_TO_REFERENCE_POINT,
  CREATE_RECOVERY_CHECKPOINT,
  DESTROY_REFERENCE_POINT,
  GET_VHD,
  GET_VM,
  LIST_CHECKPOINTS,
  LIST_REFERENCE_POINTS,
  LIST_VMS,
  REMOVE_CHECKPOINT,
  RENAME_CHECKPOINT,
  VM_DRIVES,
  VM_FIRMWARE,
  VM_NICS,
} from './scripts/hyperv-scripts.js';
import { SHUTDOWN_VM, START_VM, STOP_VM } from './scripts/target-scripts.js';
import { HyperVTarget, type HyperVTargetInit } from './target/hyperv-target.js';
import { readMark, writeBoot } from './target/replica-files.js';
import { checkpointIdOf, snapshotInstanceId } from './wmi/snapshot-instance.js';
import { invokeWmiMethod } from './wmi/wmi-method.js';

/** What the labels of replikit's checkpoints start with (core's run labels: `replikit-<runId>`). */
const REPLIKIT_LABEL_PREFIX = 'replikit-';
/** The driver kind. */
export const HYPERV_DRIVER_KIND = 'hyperv';

/**
 * What a Hyper-V driver instance does: the source side (`qhybrid` reads of checkpoints, `cbt`
 * through RCT) and the target side (a replica VM with VHDX disks, restore points as checkpoints).
 */
export const HYPERV_CAPABILITIES: Capabilities = Object.freeze({
  methods: Object.freeze(['qhybrid', 'cbt']) as string[],
  canBeSource: true,
  canBeTarget: true,
  changeTracking: true,
  formats: Object.freeze(['vhdx', 'vhd']) as string[],
  restorePoints: true,
  failover: true,
});

/** @deprecated The driver is a target too now: use {@link HYPERV_CAPABILITIES}. */
export const HYPERV_SOURCE_CAPABILITIES: Capabilities = HYPERV_CAPABILITIES;

/** What a {@link HyperVDriver} is built from. */
export interface HyperVDriverInit {
  /** The host's PowerShell. The driver closes it on `close()` unless `sharedLink` is set. */
  link: PowerShellLink;
  /**
   * The link is shared with other drivers (tests start one fake `pwsh` per file): `close()` leaves
   * it open.
   * @default false
   */
  sharedLink?: boolean;
  /** The target side's settings: where replicas go, how networks map. */
  target?: HyperVTargetInit;
  /**
   * Use Resilient Change Tracking where a VM supports it.
   * @default true
   */
  rct?: boolean;
  /**
   * Opens a VHDX (or VHD) file of the host, with its parents, for reading. The default opens the
   * local file with `@replikit/formats`; a test gives the simulated host's counting opener.
   */
  openImage?: (path: string) => Promise<ImageReader>;
  /**
   * How the host's files are reached. Unset: they are local (replikit runs on the host). A
   * `replikit-agent --host-files` on the host (through `RemoteHostFiles`) for a host controlled
   * through PowerShell remoting: the driver is then a source only (replicas, failover and the
   * pending-writes check need local files in this version).
   */
  files?: HyperVHostFiles;
  /** Called at the named steps of the failover hooks. For crash tests only. */
  failoverFaultHook?: HyperVFailoverFaultHook | undefined;
}

/** One `Msvm_VirtualSystemReferencePoint`, as {@link LIST_REFERENCE_POINTS} projects it. */
interface ReferencePointRow {
  InstanceID: string;
  ReferencePointType: number;
  VirtualSystemIdentifier: string;
  ResilientChangeTrackingIdentifiers?: string[];
}

/** Snapshot `meta` of this driver. */
interface SnapshotMeta {
  /** The VM's name when the snapshot was taken (scripts name VMs by name). */
  vm: string;
  /** True for a recovery checkpoint taken for RCT. */
  rct: boolean;
}

/**
 * The Hyper-V driver (source side): VMs and their disks from `Get-VM`, `Get-VMHardDiskDrive` and
 * `Get-VHD`; snapshots as recovery checkpoints of every disk at once (the VM's configured
 * checkpoint type where RCT is unavailable); readers over a checkpoint's frozen VHDX chain; a
 * change tracker from RCT. Every script is fixed text; values travel as the call's JSON.
 */
export class HyperVDriver extends AbstractHypervisor {
  /** `hyperv`. */
  readonly kind = HYPERV_DRIVER_KIND;
  /** See {@link HYPERV_CAPABILITIES}. */
  readonly capabilities = HYPERV_CAPABILITIES;
  private readonly link: PowerShellLink;
  private readonly sharedLink: boolean;
  private readonly target: HyperVTarget;
  private readonly rct: boolean;
  private readonly openImage: (path: string) => Promise<ImageReader>;
  /** The host's files (local, or through an agent). */
  private readonly files: HyperVHostFiles;
  /** True when the host's files are not local: the target side and failover are refused. */
  private readonly remoteFiles: boolean;
  /** The failover hooks (src/failover/). */
  private readonly failover: HyperVFailover;
  /** Changed extents per (base, current, disk): two checkpoints never change, nor their changes. */
  private readonly known = new Map<string, Extent[]>();
  /** Virtual sizes of checkpoint files: a frozen file's size never changes (merges keep it). */
  private readonly frozenSizes = new Map<string, number>();

  constructor(init: HyperVDriverInit) {
    super();
    this.link = init.link;
    this.sharedLink = init.sharedLink ?? false;
    this.rct = init.rct ?? true;
    this.files = init.files ?? LOCAL_HOST_FILES;
    this.remoteFiles = this.files !== LOCAL_HOST_FILES;
    this.target = new HyperVTarget(init.link, init.target, this.files.targetFiles);
    this.openImage = init.openImage ?? ((path) => this.files.openImage(path));
    this.failover = new HyperVFailover({
      link: init.link,
      target: this.target,
      openImage: this.openImage,
      faultHook: init.failoverFaultHook,
    });
  }

  protected override async _listVMs(): Promise<HyperVVMInfo[]> {
    const rows = await this.link.call<VmRow>(LIST_VMS);
    return Promise.all(rows.map((row) => this.vmInfo(row)));
  }

  protected override async _getVM(idOrName: string): Promise<HyperVVMInfo | undefined> {
    if (/^[0-9A-Fa-f]{8}-([0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}$/.test(idOrName)) {
      const row = await this.vmRow(idOrName);
      if (row) return this.vmInfo(row);
    }
    const rows = await this.link.call<VmRow>(LIST_VMS);
    const row = onlyNamed(rows, idOrName);
    return row ? this.vmInfo(row) : undefined;
  }

  protected override async _snapshot(vmId: string, label: string, options?: OperationOptions): Promise<Snapshot> {
    const vm = await this.requireVm(vmId);
    await this.settleConversion(vm);
    const drives = await this.drives(vm.Name);
    const vhds = await Promise.all(drives.map((d) => this.vhd(d.Path)));
    const rct = this.rct && versionHasRct(vm.Version) && vhds.every((v) => v.VhdFormat === 'VHDX');
    let checkpoint: CheckpointRow | undefined;
    if (rct) {
      const store = ReferencePointStore.of(vm.Path, this.files);
      await this.settleSnapshot(vm);
      const before = (await this.checkpoints(vm.Name)).map((c) => c.Id);
      await store.beginSnapshot(vm.Id, { label, before });
      const made = await invokeWmiMethod(
        this.link,
        CREATE_RECOVERY_CHECKPOINT,
        { vmId: vm.Id },
        { method: 'CreateSnapshot', resultClass: 'Msvm_VirtualSystemSettingData', signal: options?.signal },
      ).catch((error: unknown) => {
        throw refused(
          `Hyper-V refused a recovery checkpoint of VM '${vm.Name}'`,
          error,
          "check the VM's state and free space",
        );
      });
      const id = made === undefined ? undefined : checkpointIdOf(made);
      if (!id) {
        throw new DriverError(
          `Hyper-V took a recovery checkpoint of VM '${vm.Name}' but named it as ${JSON.stringify(made)}, not Microsoft:<checkpoint id>`,
        );
      }
      const created = (await this.checkpoints(vm.Name)).find((c) => c.Id.toLowerCase() === id);
      if (!created) throw new DriverError(`the recovery checkpoint ${id} of VM '${vm.Name}' vanished once taken`);
      // Named by the run, so that a resumed run finds it again.
      await this.nameCheckpoint(vm, created, label);
      await store.endSnapshot(vm.Id);
      checkpoint = { ...created, Name: label };
    } else {
      await this.link.call(CHECKPOINT_VM, { vm: vm.Name, label });
      checkpoint = (await this.checkpoints(vm.Name)).filter((c) => c.Name === label).at(-1);
      if (!checkpoint) throw new DriverError(`the checkpoint '${label}' of VM '${vm.Name}' vanished once taken`);
    }
    return this.snapshotOf(vm, drives, checkpoint, rct);
  }

  protected override async _listSnapshots(vmId: string): Promise<Snapshot[]> {
    const vm = await this.requireVm(vmId);
    await this.settleSnapshot(vm);
    const drives = await this.drives(vm.Name);
    const list = await this.checkpoints(vm.Name);
    return Promise.all(list.map((c) => this.snapshotOf(vm, drives, c, c.SnapshotType === 'Recovery')));
  }

  protected override async _deleteSnapshot(
    snapshot: Snapshot,
    keepMetadata: boolean,
    options?: OperationOptions,
  ): Promise<void> {
    const vm = await this.requireVm(snapshot.vmId);
    const meta = snapshot.meta as SnapshotMeta | undefined;
    const checkpoint = (await this.checkpoints(vm.Name)).find((c) => c.Id === snapshot.id);
    const store = ReferencePointStore.of(vm.Path, this.files);
    if (checkpoint) {
      if (keepMetadata && meta?.rct && checkpoint.SnapshotType === 'Recovery') {
        await this.convert(vm, checkpoint);
      } else {
        await this.link.call(REMOVE_CHECKPOINT, { vm: vm.Name, name: checkpoint.Name });
      }
      return;
    }
    await this.settleConversion(vm);
    const point = await store.get(vm.Id, snapshot.id);
    if (!point) {
      throw new NotFoundError(
        `snapshot '${snapshot.id}' of VM '${vm.Name}' is gone: no checkpoint nor reference point`,
      );
    }
    if (keepMetadata) return;
    // A point already gone (destroyed by an earlier attempt, or by the host) is only forgotten.
    if ((await this.referencePointsOf(vm)).some((p) => p.InstanceID === point.instanceId)) {
      await invokeWmiMethod(
        this.link,
        DESTROY_REFERENCE_POINT,
        { point: point.instanceId },
        { method: 'DestroyReferencePoint', signal: options?.signal },
      ).catch((error: unknown) => {
        throw refused(`Hyper-V refused to destroy reference point '${point.instanceId}' of VM '${vm.Name}'`, error);
      });
    }
    await store.delete(vm.Id, snapshot.id);
  }

  protected override async _openReader(disk: DiskRef): Promise<DiskReader> {
    const vm = await this.requireVm(disk.vmId);
    const replica = disk.snapshotId || this.remoteFiles ? undefined : await this.target.replicaById(vm.Id);
    // A replica's disk is named by its source disk's id (a run's refs) or by its slot (getVM's refs).
    const bySlot = async () => (await this.drives(vm.Name)).find((d) => slotId(d) === disk.id)?.Path;
    const path = disk.snapshotId
      ? await this.frozenPath(vm, disk.snapshotId, disk)
      : replica
        ? ((await this.target.livePath(replica, disk.id)) ?? (await bySlot()))
        : await bySlot();
    if (!path) throw new NotFoundError(`VM '${vm.Name}' has no disk '${disk.id}'`);
    const image = await this.openImage(path);
    // A replica's VHDX is its disk's size rounded up to whole sectors (a Xen disk may end mid-sector).
    const fits = replica ? image.size >= disk.size && image.size - disk.size < 4096 : image.size === disk.size;
    if (!fits) {
      await image.close();
      throw new DriverError(`disk '${disk.id}' of VM '${vm.Name}' holds ${image.size} bytes, not ${disk.size}`);
    }
    const of = disk.snapshotId ? `snapshot '${disk.snapshotId}'` : `VM '${vm.Name}'`;
    return new ChainReader(image, `disk '${disk.id}' of ${of}`, disk.size);
  }

  protected override async _changes(
    disk: DiskRef,
    base: Snapshot,
    current: Snapshot,
  ): Promise<AsyncIterable<Extent> | undefined> {
    // RCT off, not supported by the VM (configuration version, a VHD v1 disk): the planner's
    // "tracking unavailable", and the engine compares hashes.
    if (!(base.meta as SnapshotMeta | undefined)?.rct || !(current.meta as SnapshotMeta | undefined)?.rct) {
      return undefined;
    }
    // The disk set changed (a disk added, removed, moved or resized): cannot tell.
    const sameDisks =
      base.disks.length === current.disks.length &&
      base.disks.every((d, i) => d.id === current.disks[i]?.id && d.size === current.disks[i]?.size);
    const index = current.disks.findIndex((d) => d.id === disk.id);
    if (!sameDisks || index < 0 || base.vmId !== current.vmId) return undefined;
    const key = `${base.id} ${current.id} ${index}`;
    const cached = this.known.get(key);
    if (cached) return iterate(cached);
    const vm = await this.vmRow(current.vmId);
    if (!vm) return undefined;
    // replikit wrote the disks itself after the base (a failback): RCT never saw those writes, but
    // while the base is still a checkpoint and `current` the next one, the file `current` froze is
    // a differencing file over the base's and holds exactly what was written between the two.
    const untracked = await ReferencePointStore.of(vm.Path, this.files).distrustedBefore(vm.Id);
    if (untracked !== undefined && Date.parse(base.createdAt) <= Date.parse(untracked)) {
      if (this.remoteFiles) return undefined; // the files to compare are not local
      const list = await this.checkpoints(vm.Name);
      const at = list.findIndex((c) => c.Id === base.id);
      const from = list[at]?.HardDrives[index]?.Path;
      const to = list[at + 1]?.Id === current.id ? list[at + 1]?.HardDrives[index]?.Path : undefined;
      const written = at >= 0 && from && to ? await writtenOver(to, from) : undefined;
      if (!written) return undefined;
      this.known.set(key, written);
      return iterate(written);
    }
    const point = await this.referencePointOf(vm, base.id);
    const limitId = point?.rctIds[index];
    if (!limitId) return undefined; // the base's RCT id is gone
    // Looked up after the conversion: merging the base moves the files of later checkpoints.
    const checkpoint = (await this.checkpoints(vm.Name)).find((c) => c.Id === current.id);
    const path = checkpoint?.HardDrives[index]?.Path;
    if (!path) return undefined; // the current checkpoint is no longer there to ask about
    const extents = await rctChangedExtents(this.link, path, limitId, current.disks[index]!.size);
    if (!extents) return undefined;
    this.known.set(key, extents);
    if (this.known.size > 256) this.known.delete(this.known.keys().next().value!);
    return iterate(extents);
  }

  /**
   * The writes on a live disk since snapshot `base` while `base` is still a checkpoint: the live
   * file is then a differencing file over the checkpoint's frozen file, and what it holds itself
   * (to the sector) is what was written since, by the guest or by a failback. Once `base` became
   * an RCT reference point, or the disk is another one, the driver cannot tell without a snapshot.
   */
  protected override async _pending(disk: DiskRef, base: Snapshot): Promise<AsyncIterable<Extent> | undefined> {
    if (this.remoteFiles) return undefined; // the live files are not local: cannot tell
    const vm = await this.vmRow(base.vmId);
    if (!vm) return undefined;
    const index = base.disks.findIndex((d) => d.id === disk.id);
    const checkpoint = (await this.checkpoints(vm.Name)).find((c) => c.Id === base.id);
    const frozen = checkpoint?.HardDrives[index]?.Path;
    const drive = (await this.drives(vm.Name))[index];
    if (index < 0 || !frozen || !drive || slotId(drive) !== disk.id) return undefined;
    const extents = await writtenOver(drive.Path, frozen);
    return extents ? iterate(extents) : undefined;
  }

  protected override async _close(): Promise<void> {
    try {
      if (!this.sharedLink) await this.link.close();
    } finally {
      await this.files.close?.();
    }
  }

  /** Failover writes local files: refused when the host's files are remote. */
  private localOnly(what: string): void {
    if (this.remoteFiles) {
      throw new UnsupportedError(
        `${what} needs the host's files locally; with a remoting host this version of the hyperv driver replicates to it but does not fail over (run replikit on the target host with host: local)`,
      );
    }
  }

  /** The target side needs the host's files: refused when they are reached without write operations. */
  private targetFiles(what: string): void {
    if (!this.files.targetFiles) {
      throw new UnsupportedError(
        `${what} needs write access to the host's files; these host files are read-only (a source only)`,
      );
    }
  }

  // ── target side (see HyperVTarget) ──────────────────────────────────────────────────────────

  protected override async _ensureReplica(spec: ReplicaSpec): Promise<Replica> {
    this.targetFiles('a replica');
    return this.target.ensure(spec);
  }

  protected override _deleteReplica(replica: Replica): Promise<void> {
    return this.target.delete(replica);
  }

  protected override async _openWriter(replica: Replica, disk: DiskRef, options?: WriterOptions): Promise<DiskWriter> {
    this.targetFiles('writing a replica disk');
    return this.target.openWriter(replica, disk, options?.runId);
  }

  protected override _claimReplica(replica: Replica, owner: ReplicaOwner): Promise<ReplicaOwner> {
    return this.target.claim(replica, owner);
  }

  protected override _releaseReplica(replica: Replica, runId: string): Promise<void> {
    return this.target.release(replica, runId);
  }

  protected override _replicaOwner(replica: Replica): Promise<ReplicaOwner | undefined> {
    return this.target.owner(replica);
  }

  protected override _replicaState(replica: Replica): Promise<ReplicaFingerprint> {
    return this.target.state(replica);
  }

  protected override _markReplica(replica: Replica, state: 'in-progress' | 'ready'): Promise<void> {
    return this.target.mark(replica, state);
  }

  protected override _replicaMark(replica: Replica): Promise<'in-progress' | 'ready'> {
    return this.target.markOf(replica);
  }

  protected override _createRestorePoint(replica: Replica, label: string): Promise<RestorePoint> {
    return this.target.createPoint(replica, label);
  }

  protected override _hasPendingWrites(replica: Replica): Promise<boolean> {
    return this.target.hasPending(replica);
  }

  protected override _deleteRestorePoint(replica: Replica, point: RestorePoint): Promise<void> {
    return this.target.deletePoint(replica, point);
  }

  protected override _listRestorePoints(replica: Replica): Promise<RestorePoint[]> {
    return this.target.points(replica);
  }

  protected override _revertTo(replica: Replica, point: RestorePoint): Promise<void> {
    return this.target.revert(replica, point);
  }

  /**
   * Starts or turns off a VM. Hyper-V cannot refuse a start by itself: the driver refuses to start
   * a replica marked in progress, and a start it makes is recorded in the replica's fingerprint
   * (a start made elsewhere changes the VM's state and its live disk files, also in the fingerprint).
   */
  protected override async _power(vmId: string, op: 'start' | 'shutdown', _options?: OperationOptions): Promise<void> {
    const vm = await this.requireVm(vmId);
    if (op === 'shutdown') {
      await this.link.call(SHUTDOWN_VM, { vm: vm.Name });
      return;
    }
    const replica = this.files.targetFiles ? await this.target.replicaById(vm.Id) : undefined;
    if (replica) {
      if ((await readMark(this.target.files, replica.identity.dir)) !== 'ready') {
        throw new ReplicaInProgressError(
          `replica VM '${vm.Name}' is being written (marked in progress); wait for the run to finish or revert it to a restore point`,
        );
      }
      await writeBoot(this.target.files, replica.identity.dir);
    }
    await this.link.call(START_VM, { vm: vm.Name });
  }

  // ── failover (src/failover/) ──────────────────────────────────────────────────────────────

  /** Copies a restore point into a stopped VM of its own (see `FailoverHooks`). */
  async cloneRestorePoint(replica: Replica, point: RestorePoint, options: CloneOptions): Promise<CloneInfo> {
    this._checkId(options?.name, 'clone name');
    return this.failoverCall(`cloning replica '${replica?.id}'`, options, () =>
      this.failover.clone(replica, point, options),
    );
  }

  /** Turns a clone off and deletes it with its files (see `FailoverHooks`). */
  async destroyClone(cloneId: string, options?: OperationOptions): Promise<void> {
    this._checkId(cloneId, 'clone id');
    return this.failoverCall(`deleting clone '${cloneId}'`, options, () =>
      this.failover.destroyClone(cloneId, options),
    );
  }

  /** Lists the test-failover clones of the host (see `FailoverHooks`). */
  async listClones(replica?: Replica, options?: OperationOptions): Promise<CloneInfo[]> {
    return this.failoverCall('listing clones', options, () => this.failover.listClones(replica));
  }

  /** Promotes the replica at its newest point and starts it (see `FailoverHooks`). */
  async promoteReplica(replica: Replica, point: RestorePoint, options?: OperationOptions): Promise<void> {
    return this.failoverCall(`promoting replica '${replica?.id}'`, options, () =>
      this.failover.promote(replica, point),
    );
  }

  /** Returns a promoted replica to its point (see `FailoverHooks`). */
  async demoteReplica(replica: Replica, options?: OperationOptions): Promise<void> {
    return this.failoverCall(`undoing the failover of replica '${replica?.id}'`, options, () =>
      this.failover.demote(replica),
    );
  }

  /** Makes a promotion final (see `FailoverHooks`). */
  async commitFailover(replica: Replica, options?: OperationOptions): Promise<void> {
    return this.failoverCall(`committing the failover of replica '${replica?.id}'`, options, () =>
      this.failover.commit(replica),
    );
  }

  /** Turns a committed replica into an ordinary VM of the host (see `FailoverHooks`). */
  async retireReplica(replica: Replica, options?: OperationOptions): Promise<void> {
    return this.failoverCall(`retiring replica '${replica?.id}'`, options, () => this.failover.retire(replica));
  }

  /** The replica's failover state (see `FailoverHooks`). */
  async failoverMark(replica: Replica, options?: OperationOptions): Promise<ReplicaFailoverMark> {
    return this.failoverCall(`reading the failover state of replica '${replica?.id}'`, options, () =>
      this.failover.mark(replica),
    );
  }

  /** The extents written on a promoted replica's disk since its promotion (see `FailoverHooks`). */
  async promotedChanges(replica: Replica, diskId: string, options?: OperationOptions): Promise<Extent[] | undefined> {
    return this.failoverCall(`reading the changes of promoted replica '${replica?.id}'`, options, () =>
      this.failover.promotedChanges(replica, diskId),
    );
  }

  /** Opens a VM's live disk for reverse replication (see `FailoverHooks` and failover/live-disk.ts). */
  async openLiveDisk(
    vmId: string,
    diskId: string,
    mode: 'read' | 'write',
    options?: OperationOptions,
  ): Promise<LiveDisk> {
    this._checkId(vmId, 'VM id');
    return this.failoverCall(`opening disk '${diskId}' of VM '${vmId}'`, options, () =>
      this.failover.openLiveDisk(vmId, diskId, mode),
    );
  }

  /** Turns a VM off at once (`Stop-VM -TurnOff`), without asking its guest (see `FailoverHooks`). */
  async powerOff(vmId: string, options?: OperationOptions): Promise<void> {
    this._checkId(vmId, 'VM id');
    return this.failoverCall(`powering off VM '${vmId}'`, options, async () => {
      const vm = await this.requireVm(vmId);
      if (!/^(Off|Saved)/.test(vm.State)) await this.link.call(STOP_VM, { vm: vm.Name });
    });
  }

  /** Checks the driver is open and the signal, runs `fn`, and wraps what is not a replikit error (`_wrapError`). */
  private async failoverCall<T>(what: string, options: OperationOptions | undefined, fn: () => Promise<T>): Promise<T> {
    this.assertOpen();
    throwIfAborted(options?.signal);
    try {
      this.localOnly(what);
      return await fn();
    } catch (error) {
      throw this._wrapError(error, what, options?.signal);
    }
  }

  // ── helpers ───────────────────────────────────────────────────────────────────────────────

  /** The reference point of checkpoint `id`: stored, or made now when it is still a recovery checkpoint. */
  private async referencePointOf(vm: VmRow, id: string): Promise<StoredReferencePoint | undefined> {
    await this.settleConversion(vm);
    const stored = await ReferencePointStore.of(vm.Path, this.files).get(vm.Id, id);
    if (stored) return stored;
    const checkpoint = (await this.checkpoints(vm.Name)).find((c) => c.Id === id);
    if (checkpoint?.SnapshotType !== 'Recovery') return undefined;
    return this.convert(vm, checkpoint);
  }

  /**
   * `ConvertToReferencePoint`: the checkpoint goes (merged), its RCT ids are stored. The call is
   * recorded as pending first (with the VM's reference points of that moment), so that a point the
   * host made while the engine died, or while the call timed out, is found again
   * ({@link settleConversion}).
   */
  private async convert(vm: VmRow, checkpoint: CheckpointRow): Promise<StoredReferencePoint> {
    await this.settleConversion(vm);
    const store = ReferencePointStore.of(vm.Path, this.files);
    const before = (await this.referencePointsOf(vm)).map((p) => p.InstanceID);
    await store.beginConversion(vm.Id, { checkpointId: checkpoint.Id, before });
    const made = await invokeWmiMethod(
      this.link,
      CONVERT_TO_REFERENCE_POINT,
      { snapshot: snapshotInstanceId(checkpoint.Id) },
      { method: 'ConvertToReferencePoint', resultClass: 'Msvm_VirtualSystemReferencePoint' },
    ).catch((error: unknown) => {
      throw refused(
        `Hyper-V refused to turn checkpoint '${checkpoint.Name}' of VM '${vm.Name}' into a reference point`,
        error,
      );
    });
    const listed =
      made === undefined ? undefined : (await this.referencePointsOf(vm)).find((p) => p.InstanceID === made);
    if (!listed) {
      throw new DriverError(
        `Hyper-V turned checkpoint '${checkpoint.Name}' of VM '${vm.Name}' into a reference point that it does not list (${JSON.stringify(made)})`,
      );
    }
    const point = { instanceId: listed.InstanceID, rctIds: [...(listed.ResilientChangeTrackingIdentifiers ?? [])] };
    await store.set(vm.Id, checkpoint.Id, point);
    await store.endConversion(vm.Id);
    return point;
  }

  /**
   * Settles a conversion of VM `vm` whose end the driver did not see (the engine was killed between
   * `ConvertToReferencePoint` and the record of its result, or the call timed out after the host
   * made the point). Reference points carry no name or notes replikit could tag them with, so the
   * driver recognises its own by when they appeared: a point of this VM that is not in the list
   * taken just before the call, nor recorded, while the converted checkpoint is gone, is the one
   * the call made. Exactly one such point is adopted as the checkpoint's reference point (the
   * engine then uses or destroys it as usual); when there are several (another product converted a
   * checkpoint of the same VM meanwhile) none is touched, since which is replikit's is not known.
   */
  private async settleConversion(vm: VmRow): Promise<void> {
    const store = ReferencePointStore.of(vm.Path, this.files);
    const pending = await store.pendingConversion(vm.Id);
    if (!pending) return;
    const stillThere = (await this.checkpoints(vm.Name)).some((c) => c.Id === pending.checkpointId);
    if (!stillThere && !(await store.get(vm.Id, pending.checkpointId))) {
      const known = new Set([...pending.before, ...(await store.recorded(vm.Id))]);
      const fresh = (await this.referencePointsOf(vm)).filter((p) => !known.has(p.InstanceID));
      const [only] = fresh;
      if (fresh.length === 1 && only) {
        await store.set(vm.Id, pending.checkpointId, {
          instanceId: only.InstanceID,
          rctIds: [...(only.ResilientChangeTrackingIdentifiers ?? [])],
        });
      }
    }
    await store.endConversion(vm.Id);
  }

  /**
   * Names the recovery checkpoint a crashed run asked for and never named. `CreateSnapshot` gives
   * a checkpoint Hyper-V's default name and the driver renames it to the run's label right after;
   * the driver records the label and the VM's checkpoints before the call, so that a checkpoint
   * that appeared since, of type Recovery, not named by replikit, is that run's: exactly one such
   * checkpoint gets the label (the resumed run then finds and adopts it, or the engine deletes it
   * with the run's other leftovers); with several (another product took one meanwhile), none is
   * touched, since which is replikit's is not known.
   */
  private async settleSnapshot(vm: VmRow): Promise<void> {
    const store = ReferencePointStore.of(vm.Path, this.files);
    const pending = await store.pendingSnapshot(vm.Id);
    if (!pending) return;
    const list = await this.checkpoints(vm.Name);
    if (!list.some((c) => c.Name === pending.label)) {
      const before = new Set(pending.before);
      const fresh = list.filter(
        (c) => !before.has(c.Id) && c.SnapshotType === 'Recovery' && !c.Name.startsWith(REPLIKIT_LABEL_PREFIX),
      );
      const [only] = fresh;
      if (fresh.length === 1 && only) {
        await this.link.call(RENAME_CHECKPOINT, { vm: vm.Name, name: only.Name, label: pending.label });
      }
    }
    await store.endSnapshot(vm.Id);
  }

  /**
   * Renames the checkpoint `created` just took to `label`. Another job of the same VM that lists
   * its snapshots in between takes the unnamed checkpoint for one a killed run left
   * ({@link settleSnapshot}) and gives it this run's label first; the rename then finds no
   * checkpoint of Hyper-V's default name. A checkpoint that already carries `label` is what the
   * rename wanted, so that failure is accepted; any other is thrown.
   */
  private async nameCheckpoint(vm: VmRow, created: CheckpointRow, label: string): Promise<void> {
    try {
      await this.link.call(RENAME_CHECKPOINT, { vm: vm.Name, name: created.Name, label });
    } catch (error) {
      const now = await this.checkpoints(vm.Name).then(
        (list) => list.find((c) => c.Id === created.Id),
        () => undefined,
      );
      if (now?.Name !== label) throw error;
    }
  }

  /** The RCT-based reference points of VM `vm` (`VirtualSystemIdentifier` is the VM's id). */
  private async referencePointsOf(vm: VmRow): Promise<ReferencePointRow[]> {
    const rows = await this.link.call<ReferencePointRow>(LIST_REFERENCE_POINTS);
    const id = vm.Id.toLowerCase();
    return rows.filter(
      (r) => String(r.VirtualSystemIdentifier).toLowerCase() === id && Number(r.ReferencePointType) === 2,
    );
  }

  private async frozenPath(vm: VmRow, snapshotId: string, disk: DiskRef): Promise<string> {
    const checkpoint = (await this.checkpoints(vm.Name)).find((c) => c.Id === snapshotId);
    if (!checkpoint) {
      throw new NotFoundError(
        `snapshot '${snapshotId}' of VM '${vm.Name}' has no data any more (it was removed or became an RCT reference point)`,
      );
    }
    const index = Number((disk.meta as { index?: number } | undefined)?.index ?? -1);
    const path = checkpoint.HardDrives[index]?.Path;
    // The id names the drive as snapshotOf named it: a DiskRef of another disk is not this one.
    const drive = (await this.drives(vm.Name))[index];
    if (path && (drive ? slotId(drive) : `disk-${index}`) !== disk.id) {
      throw new NotFoundError(`snapshot '${snapshotId}' of VM '${vm.Name}' has no disk '${disk.id}'`);
    }
    if (!path) throw new NotFoundError(`snapshot '${snapshotId}' of VM '${vm.Name}' has no disk '${disk.id}'`);
    return path;
  }

  private async vmRow(id: string): Promise<VmRow | undefined> {
    try {
      return (await this.link.call<VmRow>(GET_VM, { id }))[0];
    } catch (error) {
      if (error instanceof DriverError && /unable to find/i.test(error.message)) return undefined;
      throw error;
    }
  }

  /**
   * The VM `id` (or name), refused with E_CONFLICT while another VM of the host has its name: the
   * scripts that follow name the VM (`-VMName`), and two VMs of one name would be mixed up.
   */
  private async requireVm(id: string): Promise<VmRow> {
    const rows = await this.link.call<VmRow>(LIST_VMS);
    const byId = await this.vmRow(id);
    const row = byId ? onlyNamed(rows, byId.Name, byId) : onlyNamed(rows, id);
    if (!row) throw new NotFoundError(`no VM '${id}' on this Hyper-V host; list VMs to see what exists`);
    return row;
  }

  private drives(vmName: string): Promise<DriveRow[]> {
    return this.link.call<DriveRow>(VM_DRIVES, { vm: vmName });
  }

  private async vhd(path: string): Promise<VhdRow> {
    const [row] = await this.link.call<VhdRow>(GET_VHD, { path });
    if (!row) throw new DriverError(`Get-VHD told nothing about ${path}`);
    return row;
  }

  private async frozenSize(path: string): Promise<number> {
    const known = this.frozenSizes.get(path);
    if (known !== undefined) return known;
    const size = (await this.vhd(path)).Size;
    this.frozenSizes.set(path, size);
    if (this.frozenSizes.size > 1024) this.frozenSizes.delete(this.frozenSizes.keys().next().value!);
    return size;
  }

  private checkpoints(vmName: string): Promise<CheckpointRow[]> {
    return this.link.call<CheckpointRow>(LIST_CHECKPOINTS, { vm: vmName });
  }

  private async vmInfo(row: VmRow): Promise<HyperVVMInfo> {
    const id = row.Id.toLowerCase();
    const drives = await this.drives(row.Name);
    const disks = await Promise.all(drives.map(async (d) => diskRefOf(id, d, await this.vhd(d.Path))));
    const nics = await this.link.call<NicRow>(VM_NICS, { vm: row.Name });
    const generation = row.Generation === 2 ? 2 : 1;
    const [firmware] = generation === 2 ? await this.link.call<FirmwareRow>(VM_FIRMWARE, { vm: row.Name }) : [];
    return {
      id,
      name: row.Name,
      cpus: row.ProcessorCount,
      memoryMiB: Math.round(row.MemoryStartup / 2 ** 20),
      powerState: powerStateOf(row.State),
      disks,
      networks: nics.map((n) => n.SwitchName ?? ''),
      // Core's spelling, so a target of another kind (Xen) keeps the MACs and boots the same way.
      macs: nics.map((n) => coreMac(n.MacAddress)),
      firmware: firmwareOf(generation),
      ...(firmware ? { secureBoot: firmware.SecureBoot === 'On' } : {}),
      ...(firmware?.SecureBootTemplate ? { secureBootTemplate: firmware.SecureBootTemplate } : {}),
      generation,
      configurationVersion: row.Version,
      nics: nics.map((n) => ({ name: n.Name, macAddress: n.MacAddress, switchName: n.SwitchName ?? null })),
    };
  }

  private async snapshotOf(vm: VmRow, drives: DriveRow[], checkpoint: CheckpointRow, rct: boolean): Promise<Snapshot> {
    const vmId = vm.Id.toLowerCase();
    const disks = await Promise.all(
      checkpoint.HardDrives.map(async (frozen, index): Promise<DiskRef> => {
        const drive = drives[index];
        return {
          id: drive ? slotId(drive) : `disk-${index}`,
          vmId,
          snapshotId: checkpoint.Id,
          size: await this.frozenSize(frozen.Path),
          label: diskLabel(drive?.Path ?? frozen.Path),
          meta: { index },
        };
      }),
    );
    const meta: SnapshotMeta = { vm: vm.Name, rct };
    return {
      id: checkpoint.Id,
      vmId,
      label: checkpoint.Name,
      createdAt: checkpoint.CreationTime,
      disks,
      meta: { ...meta },
    };
  }
}

/**
 * The one VM named `name` (Hyper-V compares names without case), or undefined; E_CONFLICT naming
 * the ids when several VMs have that name. `self`, when given, is the VM already found by id.
 */
function onlyNamed(rows: readonly VmRow[], name: string, self?: VmRow): VmRow | undefined {
  const named = rows.filter((r) => r.Name.toLowerCase() === name.toLowerCase());
  if (named.length > 1) {
    const ids = named.map((r) => r.Id.toLowerCase()).join(', ');
    throw new ConflictError(
      `${named.length} VMs of this Hyper-V host are named '${name}' (ids ${ids}); replikit's scripts address a source VM by name, so rename all but one of them`,
    );
  }
  return self ?? named[0];
}

/**
 * `what` failed because of `error`: a {@link DriverError} from a WMI call is wrapped with what the
 * driver was doing (and `advice`), a refusal, a failed job or a PowerShell error alike; any other
 * error (a cancellation) passes unchanged.
 */
function refused(what: string, error: unknown, advice?: string): unknown {
  if (!(error instanceof DriverError)) return error;
  return new DriverError(`${what}: ${error.message}${advice ? `; ${advice}` : ''}`, {
    cause: error,
    details: error.details,
  });
}

async function* iterate(extents: readonly Extent[]): AsyncIterable<Extent> {
  for (const e of extents) yield { ...e };
}
