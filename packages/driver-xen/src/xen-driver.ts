import {
  AbstractHypervisor,
  AuthError,
  type BlockDigest,
  type Capabilities,
  type CloneInfo,
  type CloneOptions,
  ConflictError,
  type DiskPullResult,
  type DiskReader,
  type DiskRef,
  type DiskWriter,
  type EnvironmentFacts,
  type Extent,
  InputError,
  type JobSpec,
  type LiveDisk,
  NotFoundError,
  type OperationOptions,
  type PullDiskFromOptions,
  type PullSource,
  type Replica,
  type ReplicaDigestsFrom,
  type ReplicaFailoverMark,
  type ReplicaFingerprint,
  ReplicaInProgressError,
  type ReplicaOwner,
  type ReplicaSpec,
  type ReplikitError,
  type RestorePoint,
  type RestorePointOptions,
  type Snapshot,
  throwIfAborted,
  type VMInfo,
  type VmExport,
  type VmImportResult,
  type WriterOptions,
} from '@replikit/core';
import type { AbdSourceReads } from './abd/abd-source.js';
import type { AbdTargetWrites } from './abd/abd-target.js';
import type { AbdWriteStats } from './abd/abd-target-sink.js';
import { CBT_BLOCK, changedExtents } from './cbt-bitmap.js';
import type { XenFailoverFaultHook } from './failover/failover-context.js';
import type { LiveDiskIo } from './failover/live-disk.js';
import { XenFailover } from './failover/xen-failover.js';
import { HttpRawReader } from './http-raw-reader.js';
import { HttpVdiSink } from './http-vdi-sink.js';
import { NbdExport } from './nbd/nbd-export.js';
import { NbdDiskReader } from './nbd-reader.js';
import type { VdiSinkFactory } from './vdi-sink.js';
import { vhdAllocation } from './vhd-allocation.js';
import { settleTasks } from './xapi/settle-tasks.js';
import { wrapXapiError, xapiCodeOf } from './xapi/xapi-error.js';
import type { XenConnection } from './xapi/xen-connection.js';
import {
  diskVbds,
  isUserVM,
  otherConfig,
  type PoolView,
  SNAPSHOT_LABEL_KEY,
  toVMInfo,
  type XRecord,
} from './xen-records.js';
import { XenReplicaWriter } from './xen-replica-writer.js';
import { XenTarget, type XenTargetInit } from './xen-target.js';
import { exportSnapshotXva } from './xva/xva-export.js';
import { importXvaAsPending } from './xva/xva-import.js';
import { dropXvaLeftovers } from './xva/xva-leftovers.js';
import { xvaFacts } from './xva/xva-staging.js';

/** The kind a job names: `driver: xen`. */
export const XEN_DRIVER_KIND = 'xen';

/**
 * What a Xen driver instance does: source and target sides with Q-Hybrid and CBT (replica disks
 * written through XAPI), XVA (whole VMs through `exportVm`/`importVm`), restore points as
 * snapshots of the replica VM. An instance created for method `abd` adds `abd`.
 */
export const XEN_CAPABILITIES: Capabilities = Object.freeze({
  methods: Object.freeze(['qhybrid', 'cbt', 'xva']),
  canBeSource: true,
  canBeTarget: true,
  changeTracking: true,
  formats: Object.freeze(['raw']),
  restorePoints: true,
  failover: true,
});

/**
 * The capabilities of an instance, under their old name.
 * @deprecated use {@link XEN_CAPABILITIES}; an instance is a target too now.
 */
export const XEN_SOURCE_CAPABILITIES: Capabilities = XEN_CAPABILITIES;

/** Options of {@link XenDriver}. */
export interface XenDriverInit extends XenTargetInit {
  /** Parallel NBD connections per disk. @default 2 */
  nbdConnections?: number;
  /** Read over NBD when the pool offers it. @default true */
  preferNbd?: boolean;
  /**
   * Makes the sink a replica writer writes its pending VDI through. @default an
   * {@link HttpVdiSink} (`PUT /import_raw_vdi?format=vhd`)
   */
  vdiSink?: VdiSinkFactory;
  /**
   * Ignored: every instance is a target now (`canBeTarget: true`).
   * @deprecated the replica hooks are always on; drop the option.
   */
  targetPreview?: boolean;
  /** The `abd` method's source side: snapshot VDIs are read through the pool's appliance. */
  abdSource?: AbdSourceReads;
  /** A target with an `abd` section: pending replica VDIs are written through the pool's appliance. */
  abdTarget?: AbdTargetWrites;
  /** Method `xva`, target side: the local folder an export is spooled in. @default `os.tmpdir()` */
  spoolDir?: string | undefined;
  /**
   * Called at the named steps of the failover hooks. For crash tests only.
   * @internal
   */
  failoverFaultHook?: XenFailoverFaultHook | undefined;
}

const sig = (options?: OperationOptions) => (options?.signal ? { signal: options.signal } : {});

const UUID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;

/**
 * The engine's label of a snapshot this driver took: its `replikit:snapshot` mark, or, for one
 * whose marking was cut off (the process killed right after `VM.snapshot`, whose task the pool
 * finishes anyway), the name `VM.snapshot` gave it atomically: `replikit <label>` with an engine
 * label (`replikit-<runId>`). Undefined for any other snapshot.
 */
function snapshotLabelOf(snapshot: XRecord): string | undefined {
  const marked = otherConfig(snapshot)[SNAPSHOT_LABEL_KEY];
  if (marked !== undefined) return marked;
  const named = /^replikit (replikit-[^\s]+)$/.exec(String(snapshot.name_label ?? ''));
  return named?.[1];
}

/** `20261206T12:00:00Z` (XAPI's datetime) as ISO 8601. */
function isoOf(xapiTime: unknown): string {
  const m = typeof xapiTime === 'string' ? /^(\d{4})(\d{2})(\d{2})T(\d{2}:\d{2}:\d{2})/.exec(xapiTime) : null;
  return m ? `${m[1]}-${m[2]}-${m[3]}T${m[4]}.000Z` : new Date(0).toISOString();
}

/**
 * The replikit driver for a XenServer / XCP-ng pool, on core's driver base: VMs and snapshots
 * through XAPI, disks read over NBD (falling back to `/export_raw_vdi`), changed blocks from CBT.
 * Source and target: the replica is a halted Xen VM with start blocked, its disks written through
 * XAPI into clones swapped in at each restore point (see xen-target.ts).
 */
export class XenDriver extends AbstractHypervisor {
  readonly kind = XEN_DRIVER_KIND;
  private readonly nbdConnections: number;
  private readonly preferNbd: boolean;
  private readonly vdiSink: VdiSinkFactory;
  /** Changed extents by `<base VDI uuid> <current VDI uuid>` (snapshots are immutable). */
  private readonly changedBlocks = new Map<string, Extent[]>();
  /** The replica side (VMs, holds, marks, restore points), over XAPI. */
  private readonly targetSide: XenTarget;
  /** The failover hooks (src/failover/). */
  private readonly failover: XenFailover;
  // ABD wiring (issue 17): set when the job's method is `abd`.
  private readonly abdSource: AbdSourceReads | undefined;
  private readonly abdTarget: AbdTargetWrites | undefined;
  /** What this instance does: {@link XEN_CAPABILITIES}, with the `abd` method when its appliance is set up. */
  override readonly capabilities: Capabilities;
  /** The target SR uuid from the options (XVA stages its imports there). */
  private readonly sr: string | undefined;
  /** Where XVA exports are spooled before their import. */
  private readonly spoolDir: string | undefined;
  /**
   * ABD wiring (issue 17), a pull job's source half: set when snapshot disks are read through the
   * appliance (method `abd`); offers a snapshot disk plugged RO into it. See `Hypervisor.pullSource` in @replikit/core.
   */
  readonly pullSource?: (snapshot: Snapshot, disk: DiskRef, options?: OperationOptions) => Promise<PullSource>;
  /**
   * ABD wiring (issue 17), a pull job's target half: set with an `abd` section; the appliance's
   * agent pulls the replica disk's pending VDI from the source appliance. See `Hypervisor.pullDiskFrom` in @replikit/core.
   */
  readonly pullDiskFrom?: (
    from: PullSource,
    replica: Replica,
    diskIndex: number,
    options: PullDiskFromOptions,
  ) => Promise<DiskPullResult>;

  /**
   * ABD wiring (issue 17): set with an `abd` section; the target appliance digests the replica
   * disk's committed VDI (plugged read-only into it), so a hash-diff run without a cache reads no
   * replica bytes over NBD. `undefined` for an algorithm the agent does not compute. See
   * `Hypervisor.replicaDigests` in @replikit/core.
   */
  readonly replicaDigests?: (
    disk: DiskRef,
    from: ReplicaDigestsFrom,
    options?: OperationOptions,
  ) => AsyncIterable<BlockDigest> | undefined;

  constructor(
    /** The pool session (closed with the driver). */
    readonly connection: XenConnection,
    init: XenDriverInit = {},
  ) {
    super();
    this.nbdConnections = init.nbdConnections ?? 2;
    this.preferNbd = init.preferNbd ?? true;
    // A block written in part is completed from the pending VDI, over NBD when the pool offers it.
    // ABD wiring (issue 17): a target with an `abd` section writes through its appliance instead.
    const abdTarget = init.abdTarget;
    this.abdTarget = abdTarget;
    this.vdiSink =
      init.vdiSink ??
      (abdTarget ? (target) => abdTarget.open(target) : undefined) ??
      ((target) =>
        new HttpVdiSink(connection, target, () =>
          this.openVdi(target.vdiRef, target.vdiSize, target.what, { signal: target.signal }),
        ));
    this.targetSide = new XenTarget(connection, init);
    this.failover = new XenFailover(connection, this.targetSide, init.failoverFaultHook);
    // ABD wiring (issue 17).
    this.abdSource = init.abdSource;
    this.capabilities = this.abdSource
      ? Object.freeze({ ...XEN_CAPABILITIES, methods: Object.freeze([...XEN_CAPABILITIES.methods, 'abd']) })
      : XEN_CAPABILITIES;
    this.sr = init.sr;
    this.spoolDir = init.spoolDir;
    // ABD wiring (issue 17): a pull job goes through these hooks.
    const abdSource = this.abdSource;
    if (abdSource) {
      this.pullSource = async (_snapshot, disk, options) => {
        try {
          return await abdSource.offer(await this.snapshotVdiRef(disk, options), disk.size, options);
        } catch (error) {
          throw wrapXapiError(error, 'xen driver: pullSource', options?.signal);
        }
      };
    }
    if (abdTarget) {
      this.replicaDigests = (disk, from, options) => this.digestReplica(abdTarget, disk, from, options);
      this.pullDiskFrom = async (from, replica, diskIndex, options) => {
        try {
          return await this.pullIntoReplica(abdTarget, from, replica, diskIndex, options);
        } catch (error) {
          throw wrapXapiError(error, 'xen driver: pullDiskFrom', options.signal);
        }
      };
    }
  }

  /** The ref of snapshot disk `disk`'s VDI. */
  private async snapshotVdiRef(disk: DiskRef, options?: OperationOptions): Promise<string> {
    if (!disk.snapshotId) throw new NotFoundError(`disk '${disk.id}' is not a snapshot disk (it has no snapshotId)`);
    return this.refOf('VDI', snapshotVdiUuid(disk), options);
  }

  /** A pull into the pending VDI of replica disk `diskIndex`, through the target appliance. */
  private async pullIntoReplica(
    writes: AbdTargetWrites,
    from: PullSource,
    replica: Replica,
    diskIndex: number,
    options: PullDiskFromOptions,
  ): Promise<DiskPullResult> {
    if (from.kind !== XEN_DRIVER_KIND) {
      throw new InputError(`a xen target pulls from a xen source's appliance only, not from a '${from.kind}' source`);
    }
    const disk = replica.disks[diskIndex];
    if (disk === undefined) throw new NotFoundError(`replica '${replica.id}' has no disk ${diskIndex}`);
    const vdiRef = await this.target.pendingVdi(replica, disk, options.runId, options);
    return writes.pull(vdiRef, from, {
      blockSize: options.blockSize,
      ...(options.runId !== undefined ? { runId: options.runId } : {}),
      ...(options.bandwidthLimit !== undefined ? { bandwidthLimit: options.bandwidthLimit } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
    });
  }

  protected async _listVMs(options?: OperationOptions): Promise<VMInfo[]> {
    const view = await this.view(options, { nics: true });
    return Object.values(view.vms)
      .filter(isUserVM)
      .map((vm) => toVMInfo(view, vm));
  }

  protected override async _snapshot(vmId: string, label: string, options?: OperationOptions): Promise<Snapshot> {
    const signal = options?.signal;
    const vmRef = await this.refOf('VM', vmId, options);
    const snapRef = await this.connection.callAsync<string>('VM.snapshot', [vmRef, `replikit ${label}`], { signal });
    await this.connection.call('VM.add_to_other_config', [snapRef, SNAPSHOT_LABEL_KEY, label], { signal });
    const view = await this.view(options);
    const snapVm = view.vms[snapRef];
    if (!snapVm) throw new NotFoundError(`the snapshot of VM '${vmId}' vanished right after it was taken`);
    for (const { vdi, vdiRef } of diskVbds(view, snapVm)) {
      if (otherConfig(vdi)[SNAPSHOT_LABEL_KEY] === undefined) {
        await this.connection.call('VDI.add_to_other_config', [vdiRef, SNAPSHOT_LABEL_KEY, label], { signal });
      }
    }
    return this.toSnapshot(view, snapVm, label);
  }

  protected override async _listSnapshots(vmId: string, options?: OperationOptions): Promise<Snapshot[]> {
    const vmRef = await this.refOf('VM', vmId, options);
    // A killed run's VM.snapshot task still finishes on the pool: let it, so its snapshot is seen.
    await settleTasks(this.connection, 'VM.snapshot', options?.signal);
    const view = await this.view(options);
    const vm = view.vms[vmRef];
    if (!vm) throw new NotFoundError(`no VM '${vmId}' on this pool`);
    const labelled: Array<[XRecord, string]> = [];
    for (const ref of (vm.snapshots as string[] | undefined) ?? []) {
      const s = view.vms[ref];
      const label = s === undefined ? undefined : snapshotLabelOf(s);
      if (s && label !== undefined) labelled.push([s, label]);
    }
    return labelled
      .map(([s, label]) => this.toSnapshot(view, s, label))
      .sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }

  protected override async _deleteSnapshot(
    snapshot: Snapshot,
    keepMetadata: boolean,
    options?: OperationOptions,
  ): Promise<void> {
    const signal = options?.signal;
    const vdiRefs = new Set<string>();
    for (const disk of snapshot.disks) {
      const ref = await this.maybeRefOf('VDI', snapshotVdiUuid(disk), options);
      if (ref) vdiRefs.add(ref);
    }
    const snapRef = await this.maybeRefOf('VM', snapshot.id, options);
    if (snapRef) {
      const view = await this.view(options);
      const snapVm = view.vms[snapRef];
      if (snapVm?.is_a_snapshot !== true) {
        throw new NotFoundError(`'${snapshot.id}' is not a snapshot; refusing to delete it`);
      }
      for (const { vdiRef } of diskVbds(view, snapVm)) vdiRefs.add(vdiRef);
      await this.connection.callAsync('VM.destroy', [snapRef], { signal });
    }
    for (const vdiRef of vdiRefs) {
      const record = await this.connection.call<XRecord>('VDI.get_record', [vdiRef], { signal });
      if (record.is_a_snapshot !== true) continue; // never a live disk
      if (keepMetadata && record.cbt_enabled === true) {
        if (record.type !== 'cbt_metadata') await this.connection.callAsync('VDI.data_destroy', [vdiRef], { signal });
      } else {
        await this.connection.callAsync('VDI.destroy', [vdiRef], { signal });
      }
    }
  }

  protected override async _openReader(disk: DiskRef, options?: OperationOptions): Promise<DiskReader> {
    const signal = options?.signal;
    if (!disk.snapshotId && disk.meta?.userdevice !== undefined) {
      // A test-failover clone's disk reads as its own VDI.
      const cloneVdi = await this.failover.cloneDiskVdi(disk, options);
      if (cloneVdi) return this.openVdi(cloneVdi, disk.size, `clone disk '${disk.id}'`, options, disk.id);
      return this.openReplicaReader(disk, options);
    }
    if (!disk.snapshotId) {
      throw new NotFoundError(`the xen driver reads snapshot disks only (disk '${disk.id}' has no snapshotId)`);
    }
    const vdiRef = await this.refOf('VDI', snapshotVdiUuid(disk), options);
    const record = await this.connection.call<XRecord>('VDI.get_record', [vdiRef], { signal });
    if (record.type === 'cbt_metadata') {
      throw new NotFoundError(`the data of snapshot disk '${disk.id}' was destroyed (only its CBT metadata is kept)`);
    }
    const liveUuid = await this.connection
      .call<string>('VDI.get_uuid', [record.snapshot_of], { signal })
      .catch(() => undefined); // the live disk may be gone; the snapshot still reads
    const named = disk.id === liveUuid || (liveUuid === undefined && disk.id === record.uuid);
    if (record.is_a_snapshot !== true || Number(record.virtual_size) !== disk.size || !named) {
      throw new NotFoundError(`no snapshot disk '${disk.id}' in snapshot '${disk.snapshotId}'`);
    }
    // ABD wiring (issue 17): the `abd` method reads through the source appliance.
    if (this.abdSource) return this.abdSource.open(vdiRef, options);
    return this.openVdi(vdiRef, disk.size, `snapshot disk '${disk.id}'`, options, disk.id);
  }

  /**
   * A reader of `size` bytes of VDI `vdiRef`: over NBD when the pool offers it (random access,
   * several connections), else `GET /export_raw_vdi` (a stream from byte 0).
   */
  private async openVdi(
    vdiRef: string,
    size: number,
    what: string,
    options?: OperationOptions,
    diskId = vdiRef,
  ): Promise<NbdDiskReader | HttpRawReader> {
    const signal = options?.signal;
    const http = () => new HttpRawReader(this.connection, vdiRef, size, what);
    if (this.preferNbd) {
      const infos = await this.connection.call<Array<Record<string, unknown>>>('VDI.get_nbd_info', [vdiRef], {
        signal,
      });
      const info = infos[0];
      if (info && typeof info.address === 'string' && typeof info.exportname === 'string') {
        try {
          const nbd = await NbdExport.open(
            {
              host: info.address,
              port: Number(info.port),
              exportName: info.exportname,
              cert: typeof info.cert === 'string' && info.cert.length > 0 ? info.cert : undefined,
              allowUnauthorized: !(typeof info.cert === 'string' && info.cert.length > 0),
            },
            { connections: this.nbdConnections, ...(signal ? { signal } : {}) },
          );
          if (nbd.size < size) {
            nbd.close();
            throw new NotFoundError(`the NBD export of '${diskId}' has ${nbd.size} bytes, not ${size}`);
          }
          const allocation = (s?: AbortSignal) => vhdAllocation(this.connection, vdiRef, size, s);
          return new NbdDiskReader(nbd, http, allocation, size, what);
        } catch (error) {
          if (error instanceof AuthError || signal?.aborted || error instanceof NotFoundError) throw error;
          // NBD not reachable: the HTTP export reads the same bytes, more slowly.
        }
      }
    }
    return http();
  }

  /**
   * The digests of replica disk `disk` as {@link XenDriver._openReader} reads it, computed by the
   * target appliance: its committed VDI (a test-failover clone's disk, which reads as the clone's
   * VDI, too).
   */
  private async *digestReplica(
    writes: AbdTargetWrites,
    disk: DiskRef,
    from: ReplicaDigestsFrom,
    options?: OperationOptions,
  ): AsyncIterable<BlockDigest> {
    const signal = options?.signal;
    let vdiRef: string;
    try {
      vdiRef = await this.replicaVdiRef(disk, options);
    } catch (error) {
      throw wrapXapiError(error, 'xen driver: replicaDigests', signal);
    }
    try {
      yield* writes.digests(vdiRef, disk.size, from, signal);
    } catch (error) {
      throw wrapXapiError(error, 'xen driver: replicaDigests', signal);
    }
  }

  /** The VDI a reader of replica disk `disk` reads: a test-failover clone's own, else the committed one. */
  private async replicaVdiRef(disk: DiskRef, options?: OperationOptions): Promise<string> {
    if (disk.snapshotId || disk.meta?.userdevice === undefined) {
      throw new NotFoundError(`disk '${disk.id}' is not a replica disk (no userdevice, or a snapshot's)`);
    }
    const cloneVdi = await this.failover.cloneDiskVdi(disk, options);
    if (cloneVdi) return cloneVdi;
    const replica = { id: disk.vmId, name: '', disks: [disk], created: false };
    return this.target.committedVdi(replica, String(disk.meta.userdevice ?? ''), options, disk.id);
  }

  /** A replica disk reads as its committed VDI (pending clones are not visible). */
  private async openReplicaReader(disk: DiskRef, options?: OperationOptions): Promise<DiskReader> {
    const replica = { id: disk.vmId, name: '', disks: [disk], created: false };
    const userdevice = String(disk.meta?.userdevice ?? '');
    const vdiRef = await this.target.committedVdi(replica, userdevice, options, disk.id);
    return this.openVdi(vdiRef, disk.size, `replica disk '${disk.id}'`, options, disk.id);
  }

  protected override async _openWriter(replica: Replica, disk: DiskRef, options?: WriterOptions): Promise<DiskWriter> {
    const target = this.target;
    const what = `disk '${disk.id}' of replica '${replica.id}'`;
    const vdiRef = await target.pendingVdi(replica, disk, options?.runId, options);
    const vdiSize = Number(await this.connection.call('VDI.get_virtual_size', [vdiRef], sig(options)));
    const sink = await this.vdiSink({ vdiRef, vdiSize, what, signal: options?.signal });
    return new XenReplicaWriter(sink, disk.size, what);
  }

  protected override async _hasPendingWrites(replica: Replica): Promise<boolean> {
    return this.target.hasPending(replica);
  }

  protected override async _changes(
    disk: DiskRef,
    base: Snapshot,
    current: Snapshot,
    options?: OperationOptions,
  ): Promise<AsyncIterable<Extent> | undefined> {
    const signal = options?.signal;
    const baseDisk = base.disks.find((d) => d.id === disk.id);
    const currentDisk = current.disks.find((d) => d.id === disk.id) ?? disk;
    if (!baseDisk || baseDisk.size !== currentDisk.size) return undefined; // a new or resized disk
    const baseRef = await this.maybeRefOf('VDI', snapshotVdiUuid(baseDisk), options);
    const currentRef = await this.maybeRefOf('VDI', snapshotVdiUuid(currentDisk), options);
    if (!baseRef || !currentRef) return undefined; // the base is lost
    const [from, to] = await Promise.all(
      [baseRef, currentRef].map((ref) => this.connection.call<XRecord>('VDI.get_record', [ref], { signal })),
    );
    if (from?.cbt_enabled !== true || to?.cbt_enabled !== true) return undefined; // CBT off
    const key = `${snapshotVdiUuid(baseDisk)} ${snapshotVdiUuid(currentDisk)}`;
    const known = this.changedBlocks.get(key);
    if (known) return iterate(known);
    let bitmap: string;
    try {
      bitmap = await this.connection.call<string>('VDI.list_changed_blocks', [baseRef, currentRef], { signal });
    } catch (error) {
      // A reset or broken chain (SR_BACKEND_FAILURE_460 …): cannot tell, the engine diffs hashes.
      if (!signal?.aborted && xapiCodeOf((error as { cause?: unknown }).cause ?? error)) return undefined;
      throw error;
    }
    const extents = changedExtents(bitmap, currentDisk.size);
    if (!extents) return undefined;
    // Two snapshot VDIs never change, so neither does their bitmap. Keeping it matters: XAPI
    // refuses list_changed_blocks (VDI_IN_USE) while the newer VDI is attached, as it is to dom0
    // while its NBD reader is open — and the engine asks again during the transfer.
    this.changedBlocks.set(key, extents);
    if (this.changedBlocks.size > 256) this.changedBlocks.delete(this.changedBlocks.keys().next().value!);
    return iterate(extents);
  }

  /**
   * See `ChangeTracker.pending`: CBT between the base snapshot's VDI and the live VDI. A running
   * VM's attached VDI is asked through a probe snapshot destroyed at once (XAPI answers
   * `VDI_IN_USE` otherwise; see failover/vdi-probe.ts), which leaves the CBT chain as it was.
   */
  protected override async _pending(
    disk: DiskRef,
    base: Snapshot,
    options?: OperationOptions,
  ): Promise<AsyncIterable<Extent> | undefined> {
    const baseDisk = base.disks.find((d) => d.id === disk.id);
    if (!baseDisk || baseDisk.size !== disk.size) return undefined;
    const extents = await this.failover.changesSince(disk.vmId, disk.id, snapshotVdiUuid(baseDisk), options);
    return extents && iterate(extents);
  }

  protected override async _power(vmId: string, op: 'start' | 'shutdown', options?: OperationOptions): Promise<void> {
    const signal = options?.signal;
    const ref = await this.refOf('VM', vmId, options);
    if (op === 'start' && (await this.targetSide.inProgress(ref, options))) {
      throw new ReplicaInProgressError(`VM '${vmId}' is a replica being written; wait for its run to end`);
    }
    const state = await this.connection.call<string>('VM.get_power_state', [ref], { signal });
    if (op === 'start' && state === 'Halted') await this.targetSide.unblockReady(ref, options);
    if (op === 'start' && state === 'Halted')
      await this.connection.callAsync('VM.start', [ref, false, false], { signal });
    if (op === 'shutdown' && state !== 'Halted') await this.connection.callAsync('VM.shutdown', [ref], { signal });
  }

  protected override _ensureReplica(spec: ReplicaSpec, options?: OperationOptions): Promise<Replica> {
    return this.target.ensure(spec, options);
  }

  protected override async _deleteReplica(replica: Replica, options?: OperationOptions): Promise<void> {
    await this.abdTarget?.abortAll(); // ABD wiring (issue 17): unplug pending VDIs before they go
    await dropXvaLeftovers(this.connection, replica.id, options); // XVA: a killed import's VM
    return this.target.delete(replica, options);
  }

  protected override async _claimReplica(
    replica: Replica,
    owner: ReplicaOwner,
    options?: OperationOptions,
  ): Promise<ReplicaOwner> {
    const holder = await this.target.claim(replica, owner, options);
    if (holder.runId === owner.runId) await dropXvaLeftovers(this.connection, replica.id, options); // XVA
    return holder;
  }

  protected override _releaseReplica(replica: Replica, runId: string, options?: OperationOptions): Promise<void> {
    return this.target.release(replica, runId, options);
  }

  protected override _replicaOwner(replica: Replica, options?: OperationOptions): Promise<ReplicaOwner | undefined> {
    return this.target.owner(replica, options);
  }

  protected override _replicaState(replica: Replica, options?: OperationOptions): Promise<ReplicaFingerprint> {
    return this.target.state(replica, options);
  }

  protected override _markReplica(
    replica: Replica,
    state: 'in-progress' | 'ready',
    options?: OperationOptions,
  ): Promise<void> {
    return this.target.mark(replica, state, options);
  }

  protected override _replicaMark(replica: Replica, options?: OperationOptions): Promise<'in-progress' | 'ready'> {
    return this.target.markOf(replica, options);
  }

  protected override _createRestorePoint(
    replica: Replica,
    label: string,
    options?: RestorePointOptions,
  ): Promise<RestorePoint> {
    return this.target.createPoint(replica, label, options);
  }

  protected override _deleteRestorePoint(replica: Replica, point: RestorePoint): Promise<void> {
    return this.target.deletePoint(replica, point);
  }

  protected override _listRestorePoints(replica: Replica, options?: OperationOptions): Promise<RestorePoint[]> {
    return this.target.listPoints(replica, options);
  }

  protected override async _revertTo(replica: Replica, point: RestorePoint, options?: OperationOptions): Promise<void> {
    await this.abdTarget?.abortAll(); // ABD wiring (issue 17): unplug pending VDIs before they go
    await dropXvaLeftovers(this.connection, replica.id, options); // XVA: a killed import's VM
    return this.target.revert(replica, point, options);
  }

  // ── failover (src/failover/) ────────────────────────────────────────────────────────────────

  /** Clones a restore point's snapshot into a stopped VM (see `FailoverHooks`). */
  async cloneRestorePoint(replica: Replica, point: RestorePoint, options: CloneOptions): Promise<CloneInfo> {
    this._checkId(options?.name, 'clone name');
    return this.failoverCall(`cloning replica '${replica?.id}'`, options, () =>
      this.failover.clone(replica, point, options),
    );
  }

  /** Deletes a clone and its own disks (see `FailoverHooks`). */
  async destroyClone(cloneId: string, options?: OperationOptions): Promise<void> {
    this._checkId(cloneId, 'clone id');
    return this.failoverCall(`deleting clone '${cloneId}'`, options, () =>
      this.failover.destroyClone(cloneId, options),
    );
  }

  /** Lists the clones on the pool (see `FailoverHooks`). */
  async listClones(replica?: Replica, options?: OperationOptions): Promise<CloneInfo[]> {
    return this.failoverCall('listing clones', options, () => this.failover.listClones(replica, options));
  }

  /** Promotes the replica at its newest point and starts it (see `FailoverHooks`). */
  async promoteReplica(replica: Replica, point: RestorePoint, options?: OperationOptions): Promise<void> {
    return this.failoverCall(`promoting replica '${replica?.id}'`, options, () =>
      this.failover.promote(replica, point, options),
    );
  }

  /** Returns a promoted replica to its point (see `FailoverHooks`). */
  async demoteReplica(replica: Replica, options?: OperationOptions): Promise<void> {
    return this.failoverCall(`undoing the failover of replica '${replica?.id}'`, options, async () => {
      await this.abdTarget?.abortAll(); // ABD wiring (issue 17): as for a revert
      return this.failover.demote(replica, options);
    });
  }

  /** Makes a promotion final (see `FailoverHooks`). */
  async commitFailover(replica: Replica, options?: OperationOptions): Promise<void> {
    return this.failoverCall(`committing the failover of replica '${replica?.id}'`, options, () =>
      this.failover.commit(replica, options),
    );
  }

  /** Turns a committed replica into an ordinary VM of the pool (see `FailoverHooks`). */
  async retireReplica(replica: Replica, options?: OperationOptions): Promise<void> {
    return this.failoverCall(`retiring replica '${replica?.id}'`, options, () =>
      this.failover.retire(replica, options),
    );
  }

  /** The replica's failover state (see `FailoverHooks`). */
  async failoverMark(replica: Replica, options?: OperationOptions): Promise<ReplicaFailoverMark> {
    return this.failoverCall(`reading the failover state of replica '${replica?.id}'`, options, () =>
      this.failover.mark(replica, options),
    );
  }

  /** The extents written on a promoted replica's disk since its promotion, from CBT (see `FailoverHooks`). */
  async promotedChanges(replica: Replica, diskId: string, options?: OperationOptions): Promise<Extent[] | undefined> {
    return this.failoverCall(`reading the changes of promoted replica '${replica?.id}'`, options, () =>
      this.failover.promotedChanges(replica, diskId, options),
    );
  }

  /** Opens a VM's live disk for reverse replication (see `FailoverHooks`, and failover/live-disk.ts). */
  async openLiveDisk(
    vmId: string,
    diskId: string,
    mode: 'read' | 'write',
    options?: OperationOptions,
  ): Promise<LiveDisk> {
    this._checkId(vmId, 'VM id');
    const io: LiveDiskIo = {
      openVdi: (vdiRef, size, what, o) => this.openVdi(vdiRef, size, what, o),
      // 64 KiB VHD blocks: CBT marks what an upload covers, so the original's tracking (and the
      // forward run after a failback) sees the written blocks only, not whole 2 MiB blocks.
      openSink: (target) =>
        new HttpVdiSink(
          this.connection,
          target,
          () => this.openVdi(target.vdiRef, target.vdiSize, target.what, { signal: target.signal }),
          CBT_BLOCK,
        ),
    };
    return this.failoverCall(`opening disk '${diskId}' of VM '${vmId}'`, options, () =>
      this.failover.openLiveDisk(io, vmId, diskId, mode, options),
    );
  }

  /** Stops a VM at once (`VM.hard_shutdown`), without asking its guest (see `FailoverHooks`). */
  async powerOff(vmId: string, options?: OperationOptions): Promise<void> {
    this._checkId(vmId, 'VM id');
    return this.failoverCall(`powering off VM '${vmId}'`, options, () => this.failover.powerOff(vmId, options));
  }

  /** Checks the driver is open and the signal, runs `fn`, and wraps what is not a replikit error. */
  private async failoverCall<T>(what: string, options: OperationOptions | undefined, fn: () => Promise<T>): Promise<T> {
    this.assertOpen();
    throwIfAborted(options?.signal);
    try {
      return await fn();
    } catch (error) {
      throw wrapXapiError(error, `xen driver: ${what}`, options?.signal);
    }
  }

  // ── XVA (whole-VM transfer, src/xva/) ───────────────────────────────────────────────────────

  /** Exports a snapshot as an XVA (`GET /export`), for method `xva`. */
  async exportVm(snapshot: Snapshot, options?: OperationOptions): Promise<VmExport> {
    try {
      return await exportSnapshotXva(this.connection, snapshot, options);
    } catch (error) {
      throw wrapXapiError(error, 'xen driver: exportVm', options?.signal);
    }
  }

  /**
   * Imports an XVA as the replica's pending version (`PUT /import` to the target SR), after
   * checking the SR has the VM's size free (rule `xva-needs-staging`); the commit swaps it in.
   */
  async importVm(replica: Replica, vm: VmExport, options: WriterOptions = {}): Promise<VmImportResult> {
    const target = this.target;
    const holder = await target.owner(replica, options);
    if (holder && holder.runId !== options.runId) {
      throw new ConflictError(`replica '${replica.id}' is held by run '${holder.runId}'; wait for it or resume it`);
    }
    try {
      const dropPending = (r: Replica, o?: OperationOptions) => target.dropPending(r, o);
      return await importXvaAsPending(
        this.connection,
        replica,
        vm,
        { sr: this.sr, dropPending, spoolDir: this.spoolDir },
        options,
      );
    } catch (error) {
      throw wrapXapiError(error, 'xen driver: importVm', options.signal);
    }
  }

  /** For an `xva` job: the source VM's size, or the target SR's free space (rule `xva-needs-staging`). */
  async ruleFacts(job: JobSpec, side: 'source' | 'target', options?: OperationOptions): Promise<EnvironmentFacts> {
    if (job.method !== 'xva') return {};
    return xvaFacts(this.connection, side, job.source.vm, this.sr, options?.signal);
  }

  protected override _wrapError(error: unknown, what: string, signal?: AbortSignal): ReplikitError {
    return wrapXapiError(error, `xen driver: ${what}`, signal);
  }

  protected override async _close(): Promise<void> {
    // ABD wiring (issue 17): unplug and release the appliance before the session ends.
    try {
      try {
        await this.abdSource?.close();
      } finally {
        await this.abdTarget?.close();
      }
    } finally {
      await this.connection.close();
    }
  }

  /** ABD wiring (issue 17): what this target wrote through its appliance; unset without an `abd` section. */
  get abdWriteStats(): Readonly<AbdWriteStats> | undefined {
    return this.abdTarget?.stats;
  }

  /** The replica side (VMs, holds, marks, restore points, pending clones), over XAPI. */
  private get target(): XenTarget {
    return this.targetSide;
  }

  /** The records a listing needs, in three calls. */
  private async view(options?: OperationOptions, read: { nics?: boolean } = {}): Promise<PoolView> {
    const signal = options?.signal;
    const classes = read.nics === true ? ['VM', 'VBD', 'VDI', 'VIF', 'network'] : ['VM', 'VBD', 'VDI'];
    const [vms, vbds, vdis, vifs, networks] = await Promise.all(
      classes.map((cls) => this.connection.call<Record<string, XRecord>>(`${cls}.get_all_records`, [], { signal })),
    );
    return { vms: vms!, vbds: vbds!, vdis: vdis!, ...(vifs && networks ? { vifs, networks } : {}) };
  }

  private toSnapshot(view: PoolView, snapVm: XRecord, label: string): Snapshot {
    const source = view.vms[String(snapVm.snapshot_of)];
    const vmId = String(source?.uuid ?? '');
    const snapshotId = String(snapVm.uuid);
    const disks: DiskRef[] = diskVbds(view, snapVm).map(({ vbd, vdi }) => {
      const live = view.vdis[String(vdi.snapshot_of)];
      return {
        id: String(live?.uuid ?? vdi.uuid),
        vmId,
        snapshotId,
        size: Number(vdi.virtual_size),
        label: String(vdi.name_label ?? ''),
        meta: { vdi: String(vdi.uuid), userdevice: String(vbd.userdevice) },
      };
    });
    return { id: snapshotId, vmId, label, createdAt: isoOf(snapVm.snapshot_time), disks, meta: {} };
  }

  /** The ref of the object with `uuid`; `E_NOT_FOUND` when there is none. */
  private async refOf(cls: 'VM' | 'VDI', uuid: string, options?: OperationOptions): Promise<string> {
    const ref = await this.maybeRefOf(cls, uuid, options);
    if (!ref) throw new NotFoundError(`no ${cls} with uuid '${uuid}' on this pool`);
    return ref;
  }

  private async maybeRefOf(cls: 'VM' | 'VDI', uuid: string, options?: OperationOptions): Promise<string | undefined> {
    if (!UUID.test(uuid)) return undefined;
    try {
      return await this.connection.call<string>(`${cls}.get_by_uuid`, [uuid], { signal: options?.signal });
    } catch (error) {
      if ((error as ReplikitError).code === 'E_NOT_FOUND') return undefined;
      throw error;
    }
  }
}

async function* iterate(extents: readonly Extent[]): AsyncIterable<Extent> {
  for (const e of extents) yield { ...e };
}

/** The uuid of a snapshot disk's own VDI (kept in `meta.vdi`). */
function snapshotVdiUuid(disk: DiskRef): string {
  const vdi = disk.meta?.vdi;
  return typeof vdi === 'string' ? vdi : '';
}
