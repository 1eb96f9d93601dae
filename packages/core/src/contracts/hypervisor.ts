import type { JobSpec } from '../job/job-spec.js';
import type { EnvironmentFacts } from '../rules/rule.js';
import type { Capabilities } from './capabilities.js';
import type { ChangeTracker } from './change-tracker.js';
import type { DiskReader, DiskRef, DiskWriter, OperationOptions } from './disk.js';
import type { FailoverHooks } from './failover.js';
import type { BlockDigest } from './transport.js';

/** Power state of a VM as the driver reports it. */
export type PowerState = 'running' | 'stopped' | 'paused' | 'unknown';

/** A VM as a driver describes it. Plain data. */
export interface VMInfo {
  /** The driver's id for the VM (uuid, folder name…). */
  id: string;
  /** Display name. */
  name: string;
  /** Number of virtual CPUs. */
  cpus: number;
  /** Memory in MiB. */
  memoryMiB: number;
  /** Power state at the time of the call. */
  powerState: PowerState;
  /** The VM's disks in boot order. */
  disks: DiskRef[];
  /** Network interfaces (names or network ids), mapped onto the replica. */
  networks?: string[];
  /**
   * The MAC address of each entry of `networks`, same order (`aa:bb:cc:dd:ee:ff`, lower case;
   * `''` where the platform has none yet). A target that can set MACs gives the replica's
   * interfaces these, so a failed-over VM keeps its addresses (DHCP reservations, licences).
   */
  macs?: string[];
  /**
   * How the VM boots: `bios` or `uefi` (Xen HVM boot firmware, Hyper-V generation 1 or 2). A
   * target of another kind maps it; absent when the driver cannot tell.
   */
  firmware?: 'bios' | 'uefi';
  /**
   * With `firmware: 'uefi'`: whether UEFI Secure Boot is on (XAPI `platform:secureboot`, Hyper-V
   * `Get-VMFirmware`'s `SecureBoot`). Absent when the driver cannot tell; a target then keeps
   * its platform's default.
   */
  secureBoot?: boolean;
}

/** A point-in-time view of all disks of a VM, taken at one instant. Plain data. */
export interface Snapshot {
  /** The driver's id for the snapshot. */
  id: string;
  /** The VM it was taken of. */
  vmId: string;
  /** The label given at creation. */
  label: string;
  /** ISO 8601 creation time. */
  createdAt: string;
  /** The frozen disks, in the VM's disk order; each has `snapshotId` set. */
  disks: DiskRef[];
  /** Driver-specific data the driver needs to find the snapshot again. */
  meta?: Record<string, unknown>;
}

/** What the engine asks for when it creates or finds the replica of a VM. */
export interface ReplicaSpec {
  /** Name of the replica VM. The same name finds the same replica again. */
  name: string;
  /** The source VM (name, CPUs, memory and networks are copied onto the replica). */
  source: VMInfo;
  /**
   * One entry per source disk, in order: the replica disk gets the same size. A driver whose disk
   * ids cannot be reused on its side (paths, say) maps them and keeps the order.
   */
  disks: Array<{ sourceDiskId: string; size: number; label?: string }>;
  /** Driver-specific placement (target folder, SR, host path…), from the job's `target` section. */
  placement?: Record<string, unknown>;
  /** The job that makes or finds the replica (the engine gives it), for a driver that marks its replicas. */
  job?: { name: string; method: string };
}

/** A replica VM on the target. Plain data. */
export interface Replica {
  /** The driver's id for the replica VM. */
  id: string;
  /** The replica's name. */
  name: string;
  /** The replica's disks, in the order of {@link ReplicaSpec.disks}. */
  disks: DiskRef[];
  /** True when `ensureReplica` created the replica (its disks read as zero). */
  created: boolean;
  /** Driver-specific data. */
  meta?: Record<string, unknown>;
}

/**
 * Identifies the replica's state: any boot, any write outside replikit, any change of size or
 * snapshot chain gives a different `value`. Compare values; never parse them.
 */
export interface ReplicaFingerprint {
  /** An opaque string; equal strings mean an untouched replica. */
  value: string;
  /** What the value was built from, for messages and logs. */
  details?: Record<string, unknown>;
}

/** A complete version of a replica that it can be reverted to. Plain data. */
export interface RestorePoint {
  /** The driver's id for the point. */
  id: string;
  /** The replica it belongs to. */
  replicaId: string;
  /** The label given at creation (the engine uses the run id). */
  label: string;
  /** ISO 8601 creation time. */
  createdAt: string;
}

/**
 * The run that holds a replica, from its `prepare` to its `cleanup`: only that run writes, commits
 * or reverts it. Plain data, kept by the driver on the target side (beside the replica), so runs
 * journaled in different state folders, or on different hosts, see one another.
 */
export interface ReplicaOwner {
  /** The run's id: the same id re-takes its own hold (a resumed run). */
  runId: string;
  /** Host name of the process driving the run. */
  host: string;
  /** Process id of the process driving the run (on `host`). */
  pid: number;
  /** The state folder (or store) the run is journaled in, where `replikit resume` finds it. */
  stateDir?: string;
  /** ISO 8601 time the run started. */
  startedAt: string;
}

/** Options of {@link Hypervisor.openWriter}. */
export interface WriterOptions extends OperationOptions {
  /**
   * The run that writes. A driver refuses a writer of another run while the replica is held
   * ({@link Hypervisor.claimReplica}), and never continues writes pending from another run: they
   * are dropped first (the replica returns to its last restore point).
   */
  runId?: string;
}

/**
 * A fencing token a target operation carries: the epoch of the run's lease on its replica
 * (`ReplicaLease.epoch`). A target whose driver fences (`capabilities.fencing`) keeps, for each
 * replica, the highest epoch it has seen, refuses an operation with a lower one with
 * `E_LEASE_LOST`, and raises it, atomically with the operation; so a worker paused past its lease
 * can never commit once the lease's next holder has claimed the replica.
 */
export interface TargetFence {
  /** The lease's epoch: a safe integer ≥ 1, greater for every later lease on the replica. */
  epoch: number;
}

/** Options of {@link Hypervisor.createRestorePoint}. */
export interface RestorePointOptions extends OperationOptions {
  /** Keep at most this many restore points; older ones are deleted. */
  retention?: number;
  /**
   * The run's lease epoch. A fencing driver refuses the commit (`E_LEASE_LOST`, nothing changed)
   * when the replica has seen a higher epoch, and records this one with the commit. Ignored by a
   * driver without `capabilities.fencing`.
   */
  fence?: TargetFence;
}

/** Options of {@link Hypervisor.revertTo}. */
export interface RevertOptions extends OperationOptions {
  /** The run's lease epoch, checked and recorded like {@link RestorePointOptions.fence}. */
  fence?: TargetFence;
}

/** Options of {@link Hypervisor.claimReplica}. */
export interface ClaimOptions extends OperationOptions {
  /**
   * The claiming run's lease epoch. A fencing driver refuses the claim (`E_LEASE_LOST`) when the
   * replica has seen a higher epoch and otherwise records this one before the claim, so every
   * later operation fenced with a lower epoch is refused. Ignored by a driver without
   * `capabilities.fencing`.
   */
  fence?: TargetFence;
}

/**
 * A whole VM as one stream, in a platform's own export format (an XVA for XenServer): what a
 * method that moves whole VMs (`xva`) carries from the source to the target instead of blocks.
 */
export interface VmExport {
  /** The stream's format, such as `xva`: the target refuses one it cannot import. */
  readonly format: string;
  /** The snapshot the export is of. */
  readonly snapshot: Snapshot;
  /** The export's bytes; read once. */
  readonly body: AsyncIterable<Uint8Array>;
  /** Ends the export (a body not read to its end is dropped). Calling it twice is harmless. */
  close(): Promise<void>;
}

/** What {@link Hypervisor.importVm} moved. */
export interface VmImportResult {
  /** Bytes of the export read from the source. */
  bytesRead: number;
  /** Bytes written to the target (the import's size). */
  bytesWritten: number;
}

/**
 * Where a target may pull one snapshot disk from, for a job whose direction is `pull` (method
 * `abd`): what the source's {@link Hypervisor.pullSource} offers and the target's
 * {@link Hypervisor.pullDiskFrom} takes. The source side keeps the disk served (plugged into its
 * appliance, say) until {@link PullSource.close}. Not journaled (it holds a key): a resumed run
 * asks for a new offer.
 */
export interface PullSource {
  /** The kind of the source driver that made the offer: a target refuses one it cannot pull from. */
  readonly kind: string;
  /** The address of the agent that serves the disk. */
  readonly address: { readonly host: string; readonly port: number };
  /**
   * The credential that agent accepts (a TLS-PSK identity and key); never log or journal it. Give
   * one that does not outlive the serving agent's session (the Xen driver gives its appliance's
   * key, drawn anew each time the appliance starts; a persistent appliance keeps it until then).
   */
  readonly credential: { readonly identity: string; readonly key: Uint8Array };
  /** The VM id the serving agent lists the disk under. */
  readonly vmId: string;
  /** The disk id the serving agent lists the disk under. */
  readonly diskId: string;
  /** The disk's size in bytes. */
  readonly size: number;
  /** Ends the offer (the source stops serving the disk). Calling it twice is harmless. */
  close(): Promise<void>;
}

/** Options of {@link Hypervisor.pullDiskFrom}. */
export interface PullDiskFromOptions extends WriterOptions {
  /** Bytes per compared block: the run's block size. */
  blockSize: number;
  /**
   * Cap, in bytes per second, on the data this pull reads from the source (the job's
   * `bandwidthLimit`, shared among the disks that pull at once). Absent: no cap.
   */
  bandwidthLimit?: number;
}

/** What {@link Hypervisor.pullDiskFrom} did to one replica disk. */
export interface DiskPullResult {
  /** Blocks compared (the source block's digest against the replica block's). */
  blocks: number;
  /** Blocks that differed and were copied or zeroed. */
  copied: number;
  /** Bytes read from the source. */
  bytesRead: number;
  /** Bytes written to the replica; defaults to `bytesRead` when the driver cannot tell. */
  bytesWritten?: number;
}

/** What {@link Hypervisor.replicaDigests} digests: from which block, how big a block, with which hash. */
export interface ReplicaDigestsFrom {
  /** The first block whose digest is wanted (the run's checkpoint). */
  fromBlock: number;
  /** Bytes per block. */
  blockSize: number;
  /** Digest algorithm, node:crypto's name (`sha256`). */
  algorithm: string;
}

/**
 * One connection to a virtualisation platform (a XenServer pool, a Hyper-V host, a folder).
 * Drivers implement it; the engine never talks to a platform except through it.
 *
 * Every object it returns ({@link VMInfo}, {@link Snapshot}, {@link Replica}, {@link RestorePoint})
 * is plain data that the engine journals and may hand back after a restart of the process.
 *
 * The optional {@link FailoverHooks} (clones, promotion, undo) are there when
 * `capabilities.failover` is true.
 */
export interface Hypervisor extends FailoverHooks {
  /** The driver kind: `xen`, `hyperv`, `file` or a third party's. */
  readonly kind: string;
  /** What this driver can do. */
  readonly capabilities: Capabilities;
  /** The change tracker, when `capabilities.changeTracking` is true. */
  readonly changeTracker?: ChangeTracker | undefined;
  /** Lists the VMs. */
  listVMs(options?: OperationOptions): Promise<VMInfo[]>;
  /** Finds a VM by id or name; rejects with `E_NOT_FOUND` when there is none. */
  getVM(idOrName: string, options?: OperationOptions): Promise<VMInfo>;
  /** Takes a crash-consistent snapshot of all the VM's disks at one instant. */
  snapshot(vmId: string, label: string, options?: OperationOptions): Promise<Snapshot>;
  /** Lists the snapshots of a VM, oldest first. */
  listSnapshots(vmId: string, options?: OperationOptions): Promise<Snapshot[]>;
  /** Deletes a snapshot. `keepMetadata` keeps what change tracking needs and drops the data. */
  deleteSnapshot(snapshot: Snapshot, options?: OperationOptions & { keepMetadata?: boolean }): Promise<void>;
  /**
   * Opens a disk for reading: a snapshot disk, or a replica disk. A replica disk reads as its last
   * restore point (writes pending since then are not visible); before its first restore point it
   * reads as its current content.
   */
  openReader(disk: DiskRef, options?: OperationOptions): Promise<DiskReader>;
  /**
   * Optional: digests of replica disk `disk` computed where the replica lives (a Xen target's
   * appliance), so that a hash-diff run with no replication cache reads no replica bytes across
   * the network. The digests are those of the disk EXACTLY as {@link openReader} reads it (the
   * last restore point, never pending writes: a resumed run compares every block after its
   * checkpoint with them), in block order from `from.fromBlock` to the end, `null` for an
   * all-zero block, each made with `from.algorithm` (node:crypto's name) over `from.blockSize`
   * bytes (the last block may be shorter).
   *
   * Returns `undefined` when this driver cannot compute them for this disk (an algorithm it does
   * not support, no appliance configured): the caller then reads the disk through
   * {@link openReader} and hashes it itself. Whatever it holds open for the walk (a plugged disk)
   * is released when the iteration ends, is stopped early, or is aborted through `options.signal`.
   */
  replicaDigests?(
    disk: DiskRef,
    from: ReplicaDigestsFrom,
    options?: OperationOptions,
  ): AsyncIterable<BlockDigest> | undefined;
  /** Creates the replica VM, or finds it when one of that name exists. */
  ensureReplica(spec: ReplicaSpec, options?: OperationOptions): Promise<Replica>;
  /** Deletes a replica VM and its disks (used when its first run fails: it never was complete). */
  deleteReplica(replica: Replica, options?: OperationOptions): Promise<void>;
  /**
   * Opens one replica disk for writing. One writer per disk at a time. With `runId`, rejects with
   * `E_CONFLICT` when another run holds the replica, and drops writes pending from another run
   * (or from a writer without a run id) instead of continuing them.
   */
  openWriter(replica: Replica, disk: DiskRef, options?: WriterOptions): Promise<DiskWriter>;
  /**
   * Takes the replica for a run, atomically (two claims at once: one wins). Resolves with the
   * replica's holder after the call: `owner` itself when the replica was free or already held by
   * the same `runId` (its record is then refreshed: a resumed run re-takes its hold), or the other
   * run that holds it, in which case nothing changed. On success, writes pending since the last
   * restore point that `owner.runId` did not make are dropped: a run never adopts another's.
   * The hold survives the process (a crashed run keeps the replica until it is resumed, rolled
   * back or abandoned).
   */
  claimReplica(replica: Replica, owner: ReplicaOwner, options?: ClaimOptions): Promise<ReplicaOwner>;
  /** Ends the hold of run `runId`. Does nothing when the replica is free or held by another run. */
  releaseReplica(replica: Replica, runId: string, options?: OperationOptions): Promise<void>;
  /** The run holding the replica, or `undefined` when it is free. */
  replicaOwner(replica: Replica, options?: OperationOptions): Promise<ReplicaOwner | undefined>;
  /**
   * The replica's current fingerprint, to detect changes made outside replikit. Writes pending
   * since the last restore point count: they change it.
   */
  replicaState(replica: Replica, options?: OperationOptions): Promise<ReplicaFingerprint>;
  /** Marks the replica as being written (it then refuses to start) or as ready. */
  markReplica(replica: Replica, state: 'in-progress' | 'ready', options?: OperationOptions): Promise<void>;
  /** Returns `in-progress` or `ready`. */
  replicaMark(replica: Replica, options?: OperationOptions): Promise<'in-progress' | 'ready'>;
  /**
   * Makes everything written since the last restore point durable and part of a new restore
   * point. Every writer of the replica must be closed first. Idempotent per label: calling it
   * again with the label of the newest point returns that point.
   */
  createRestorePoint(replica: Replica, label: string, options?: RestorePointOptions): Promise<RestorePoint>;
  /** Lists the replica's restore points, oldest first. */
  listRestorePoints(replica: Replica, options?: OperationOptions): Promise<RestorePoint[]>;
  /**
   * Drops every write made after `point` and returns the replica to it. With `options.fence`, a
   * fencing driver refuses the revert of a stale lease holder like a commit.
   */
  revertTo(replica: Replica, point: RestorePoint, options?: RevertOptions): Promise<void>;
  /**
   * Optional, for methods that move whole VMs (`xva`, see core's `ALWAYS_FULL_METHODS`): exports
   * `snapshot` as one stream. Drivers without it cannot be the source of such a method.
   */
  exportVm?(snapshot: Snapshot, options?: OperationOptions): Promise<VmExport>;
  /**
   * Optional, the target half of {@link exportVm}: writes the whole VM of `vm` as the replica's
   * next version. Like a writer's, the import stays pending (invisible to readers and dropped by a
   * claim of another run or a revert) until {@link createRestorePoint} makes it the replica; a
   * second import by the same run replaces the first. Rejects before touching anything when the
   * target cannot hold it (the `xva-needs-staging` rule's error).
   */
  importVm?(replica: Replica, vm: VmExport, options?: WriterOptions): Promise<VmImportResult>;
  /**
   * Optional, the source half of a pull (job `options.direction: 'pull'`): makes one snapshot disk
   * reachable by the target's {@link pullDiskFrom} (an agent's address and a credential good until
   * {@link PullSource.close}). A source without it cannot serve a pull job (rule
   * `pull-needs-driver-support`).
   */
  pullSource?(snapshot: Snapshot, disk: DiskRef, options?: OperationOptions): Promise<PullSource>;
  /**
   * Optional, the target half of a pull: the target brings replica disk `diskIndex` up to date
   * from `source` itself, comparing block digests computed on both sides and copying only the
   * blocks that differ (no replication cache takes part). Like a writer's, the writes stay pending
   * until {@link createRestorePoint}; a second pull by the same run continues them. A target
   * without it cannot be the target of a pull job (rule `pull-needs-driver-support`).
   */
  pullDiskFrom?(
    source: PullSource,
    replica: Replica,
    diskIndex: number,
    options: PullDiskFromOptions,
  ): Promise<DiskPullResult>;
  /**
   * Optional: facts about this side of `job` that only the platform knows (free staging space, the
   * VM's size), for the rules of {@link EnvironmentFacts}. The engine validates the job with them
   * before a run touches anything; without the hook those rules pass.
   */
  ruleFacts?(job: JobSpec, side: 'source' | 'target', options?: OperationOptions): Promise<EnvironmentFacts>;
  /** Starts or shuts down a VM; starting a replica marked in-progress rejects with `E_REPLICA_IN_PROGRESS`. */
  power(vmId: string, op: 'start' | 'shutdown', options?: OperationOptions): Promise<void>;
  /** Closes the connection. */
  close(): Promise<void>;
}
