import { createHash } from 'node:crypto';
import { join, sep } from 'node:path';
import {
  ConflictError,
  type DiskRef,
  type DiskWriter,
  InputError,
  NotFoundError,
  type Replica,
  type ReplicaFingerprint,
  type ReplicaOwner,
  type ReplicaSpec,
  type RestorePoint,
} from '@replikit/core';
import { assertNotFailedOver, readFailover, retiredAs } from '../failover/failover-files.js';
import type { CheckpointRow, DriveRow, VhdRow } from '../hyperv-records.js';
import type { PowerShellLink } from '../powershell/powershell-link.js';
import { GET_VHD, LIST_CHECKPOINTS, REMOVE_CHECKPOINT, VM_DRIVES } from '../scripts/hyperv-scripts.js';
import {
  ADD_DRIVE,
  ADD_NIC_CONNECTED,
  ADD_NIC_DISCONNECTED,
  ADD_NIC_DYNAMIC,
  CHECKPOINT_REPLICA,
  HOST_DISK_FOLDER,
  LIST_VM_NOTES,
  NEW_DYNAMIC_VHD,
  NEW_REPLICA_VM,
  REMOVE_NIC,
  REMOVE_VM,
  RESTORE_CHECKPOINT,
  SET_REPLICA_FIRMWARE,
  SET_REPLICA_VM,
  STOP_VM,
} from '../scripts/target-scripts.js';
import { openPendingWriter } from './pending-writer.js';
import {
  baseDiskName,
  claimOwner,
  fileStamp,
  identityOf,
  listPending,
  type ReplicaIdentity,
  readBoot,
  readMark,
  readOwner,
  readPointIds,
  releaseOwner,
  replicaFolderName,
  runKey,
  writeMark,
  writePointIds,
} from './replica-files.js';
import { type NicPlan, planNics, replicaFirmware, replicaGeneration } from './replica-shape.js';
import { LOCAL_TARGET_FILES, type TargetFiles } from './target-files.js';

/** A VM as the `list-vm-notes` script projects it. */
export interface NoteRow {
  Name: string;
  Id: string;
  State: string;
  Notes: string | null;
  /** The VM's folder (where its configuration lives). */
  Path?: string | null;
}

/** A replica VM found on the host: its row and the identity in its notes. */
export interface ReplicaVm {
  row: NoteRow;
  identity: ReplicaIdentity & { disks: string[] };
}

/** Where replicas go and how their networks map; from the job's `target` section. */
export interface HyperVTargetInit {
  /** The folder receiving replicas (one sub-folder each); unset: the host's default virtual hard disk folder. */
  replicaPath?: string | undefined;
  /** Source switch (network) name → target switch name; unmapped NICs are added disconnected. */
  networkMap?: Record<string, string> | undefined;
  /**
   * The Secure Boot template of a generation 2 replica whose source has Secure Boot on and names
   * no template of its own (a XenServer source).
   * @default "MicrosoftWindows"
   */
  secureBootTemplate?: string | undefined;
  /** Called with a warning (unmapped networks). @default `process.emitWarning` */
  onWarning?: ((message: string) => void) | undefined;
}

const MiB = 2 ** 20;
/** A VHDX's size for a disk of `size` bytes: whole 512-byte sectors (a Xen disk may end mid-sector). */
function vhdxSize(size: number): number {
  return Math.ceil(size / 512) * 512;
}

/** The adapter `New-VM` adds by itself; removed so the replica's adapters are the source's. */
const DEFAULT_NIC = 'Network Adapter';

/**
 * The target side of the Hyper-V driver: the replica VM (`New-VM`/`Set-VM`, its identity in the
 * VM's notes), its disks as VHDX in a folder of `replicaPath` (or of the host's default virtual hard
 * disk folder), its marks and hold as files in that
 * folder, its restore points as checkpoints, and its fingerprint. {@link HyperVDriver} delegates
 * its replica hooks here. With `host: local` it writes the files itself; with a remoting host, through the host's
 * `replikit-agent --host-files` ({@link TargetFiles}).
 */
export class HyperVTarget {
  constructor(
    private readonly link: PowerShellLink,
    private readonly init: HyperVTargetInit = {},
    /** The replica folders' files: local, or the host's through its agent. */
    readonly files: TargetFiles = LOCAL_TARGET_FILES,
  ) {}

  /** Finds the replica of `spec` by the identity in its notes, or creates it with its disks and NICs. */
  async ensure(spec: ReplicaSpec): Promise<Replica> {
    const rows = await this.link.call<NoteRow>(LIST_VM_NOTES);
    const retired = rows.find((row) => retiredAs(row.Notes, spec.name));
    if (retired) {
      throw new ConflictError(
        `VM '${retired.Name}' was replica '${spec.name}' and became a production VM by a permanent failover; no run overwrites it: name another replica`,
        { details: { vmId: retired.Id.toLowerCase() } },
      );
    }
    const found = (await this.replicaVms()).find(
      (r) => r.identity.replica === spec.name && r.identity.of === spec.source.id,
    );
    if (found) {
      const sizes = await this.diskSizes(found.row.Name);
      const same = sizes.length === spec.disks.length && spec.disks.every((d, i) => sizes[i] === vhdxSize(d.size));
      if (!same) {
        throw new ConflictError(
          `replica '${spec.name}' exists with disks of ${sizes.join(', ')} bytes, not ${spec.disks.map((d) => d.size).join(', ')}; delete it or name another replica`,
        );
      }
      return this.toReplica(found, spec, false);
    }
    const dir = join(await this.replicaRoot(), replicaFolderName(spec.name, spec.source.id));
    await this.files.makeFolder(dir);
    await writeMark(this.files, dir, 'in-progress'); // before the VM exists: nothing may start a half-built replica
    const name = await this.freeVmName(spec, dir);
    const identity = {
      replikit: 1 as const,
      replica: spec.name,
      of: spec.source.id,
      dir,
      disks: spec.disks.map((d) => d.sourceDiskId),
    };
    await this.link.call(NEW_REPLICA_VM, {
      name,
      generation: replicaGeneration(spec.source),
      memory: Math.max(32, Math.ceil(spec.source.memoryMiB / 2) * 2) * MiB,
      path: dir,
    });
    const firmware = replicaFirmware(spec.source, this.init.secureBootTemplate);
    if (firmware) await this.link.call(SET_REPLICA_FIRMWARE, { name, ...firmware });
    await this.link.call(SET_REPLICA_VM, {
      name,
      cpus: Math.max(1, spec.source.cpus),
      notes: JSON.stringify(identity),
    });
    await this.link.call(REMOVE_NIC, { vm: name, nic: DEFAULT_NIC }).catch(() => undefined);
    await this.addNics(name, spec, planNics(spec.source, this.init.networkMap ?? {}));
    for (const [i, disk] of spec.disks.entries()) {
      const path = join(dir, baseDiskName(i));
      await this.files.remove(path); // a file a killed ensure left
      await this.link.call(NEW_DYNAMIC_VHD, { path, size: vhdxSize(disk.size), block: 2 * MiB });
      await this.link.call(ADD_DRIVE, { vm: name, path });
    }
    const made = (await this.replicaVms()).find(
      (r) => r.identity.replica === spec.name && r.identity.of === spec.source.id,
    );
    if (!made) throw new NotFoundError(`replica '${spec.name}' vanished once created`);
    return this.toReplica(made, spec, true);
  }

  /** Removes the replica VM, its checkpoints and its folder. */
  async delete(replica: Replica): Promise<void> {
    const vm = await this.vm(replica);
    if (/^Running|^Paused/.test(vm.row.State)) await this.link.call(STOP_VM, { vm: vm.row.Name });
    for (const c of (await this.checkpoints(vm)).reverse()) {
      await this.link.call(REMOVE_CHECKPOINT, { vm: vm.row.Name, name: c.Name });
    }
    await this.link.call(REMOVE_VM, { vm: vm.row.Name });
    await this.files.remove(vm.identity.dir, true);
  }

  /** Takes the hold (atomic: an exclusively created file); drops the pending writes of other runs. */
  async claim(replica: Replica, owner: ReplicaOwner): Promise<ReplicaOwner> {
    const { dir } = (await this.vm(replica)).identity;
    assertNotFailedOver(await readFailover(dir, (p) => this.files.readText(p)), replica.id);
    const holder = await claimOwner(this.files, dir, owner);
    if (holder.runId === owner.runId) await this.dropPending(dir, runKey(owner.runId));
    return holder;
  }

  /** Ends the hold of `runId`. */
  async release(replica: Replica, runId: string): Promise<void> {
    await releaseOwner(this.files, (await this.vm(replica)).identity.dir, runId);
  }

  /** The run holding the replica. */
  async owner(replica: Replica): Promise<ReplicaOwner | undefined> {
    return readOwner(this.files, (await this.vm(replica)).identity.dir);
  }

  /** Marks the replica (a file in its folder; Hyper-V has no place that blocks a start). */
  async mark(replica: Replica, state: 'in-progress' | 'ready'): Promise<void> {
    await writeMark(this.files, (await this.vm(replica)).identity.dir, state);
  }

  /** `in-progress` unless marked ready. */
  async markOf(replica: Replica): Promise<'in-progress' | 'ready'> {
    return readMark(this.files, (await this.vm(replica)).identity.dir);
  }

  /**
   * The fingerprint: the VM's state, its checkpoints, each live disk file (path, size, inode and
   * modification time: a start or an outside write changes them), the pending files of any run,
   * and the last start made through replikit.
   */
  async state(replica: Replica): Promise<ReplicaFingerprint> {
    const vm = await this.vm(replica);
    const drives = await this.drives(vm.row.Name);
    const parts = {
      state: vm.row.State,
      checkpoints: (await this.checkpoints(vm)).map((c) => c.Id),
      disks: await Promise.all(drives.map(async (d) => [d.Path, await fileStamp(this.files, d.Path)])),
      pending: await Promise.all(
        (await listPending(this.files, vm.identity.dir)).map(async (p) => [
          p.path,
          await fileStamp(this.files, p.path),
        ]),
      ),
      boot: await readBoot(this.files, vm.identity.dir),
    };
    return { value: createHash('sha256').update(JSON.stringify(parts)).digest('hex'), details: parts };
  }

  /**
   * A writer of the pending writes of run `runId` to one disk: the replica is marked in progress,
   * pending writes of other runs for that disk are dropped, and this run's are continued.
   */
  async openWriter(replica: Replica, disk: DiskRef, runId: string | undefined): Promise<DiskWriter> {
    const vm = await this.vm(replica);
    const index = vm.identity.disks.indexOf(disk.id);
    const known = replica.disks.find((d) => d.id === disk.id);
    if (index < 0 || !known) throw new NotFoundError(`replica '${replica.id}' has no disk '${disk.id}'`);
    const dir = vm.identity.dir;
    assertNotFailedOver(await readFailover(dir, (p) => this.files.readText(p)), replica.id);
    const holder = await readOwner(this.files, dir);
    if (holder && holder.runId !== runId) {
      throw new ConflictError(`replica '${replica.id}' is held by run '${holder.runId}'; wait for it or resume it`);
    }
    const key = runKey(runId);
    for (const p of await listPending(this.files, dir)) {
      if (p.index === index && (p.key !== key || p.temporary)) await this.files.remove(p.path);
    }
    await writeMark(this.files, dir, 'in-progress');
    const newest = (await this.checkpoints(vm)).at(-1);
    return openPendingWriter({
      files: this.files,
      dir,
      index,
      key,
      parentPath: newest?.HardDrives[index]?.Path,
      size: known.size,
      what: `disk '${disk.id}' of replica '${replica.id}'`,
    });
  }

  /** True when a run left writes pending. */
  async hasPending(replica: Replica): Promise<boolean> {
    return (await listPending(this.files, (await this.vm(replica)).identity.dir)).some((p) => !p.temporary);
  }

  /**
   * Commits the pending writes and makes them restore point `label`: each pending file is renamed
   * over its disk's live file (atomic per disk), then a checkpoint freezes every disk at once.
   * Cut between the two, the replica is in progress; asked again, the commit finishes (the renamed
   * disks have no pending file left), and a revert discards it.
   */
  async createPoint(replica: Replica, label: string): Promise<RestorePoint> {
    const vm = await this.vm(replica);
    const drives = await this.drives(vm.row.Name);
    const holder = await readOwner(this.files, vm.identity.dir);
    const pending = (await listPending(this.files, vm.identity.dir)).filter((p) => !p.temporary);
    const recorded = await readPointIds(this.files, vm.identity.dir);
    const newest = (await this.checkpoints(vm)).at(-1);
    if (pending.length === 0 && newest?.Name === label && !recorded.includes(newest.Id)) {
      // This point's checkpoint, taken by a commit cut before it was recorded: adopt it.
      await writePointIds(this.files, vm.identity.dir, [...recorded, newest.Id]);
      return this.toPoint(replica, newest);
    }
    for (const [index, drive] of drives.entries()) {
      const mine = pending.filter((p) => p.index === index);
      const chosen = mine.find((p) => holder && p.key === runKey(holder.runId)) ?? mine.at(-1);
      if (chosen) await this.files.rename(chosen.path, drive.Path);
      for (const p of mine) if (p !== chosen) await this.files.remove(p.path);
    }
    await this.link.call(CHECKPOINT_REPLICA, { vm: vm.row.Name, label });
    const made = (await this.checkpoints(vm)).filter((c) => c.Name === label && !recorded.includes(c.Id)).at(-1);
    if (!made) throw new NotFoundError(`the checkpoint '${label}' of replica '${replica.id}' vanished once taken`);
    await writePointIds(this.files, vm.identity.dir, [...recorded, made.Id]);
    return this.toPoint(replica, made);
  }

  /** The restore points (the checkpoints of the replica VM that replikit made), oldest first. */
  async points(replica: Replica): Promise<RestorePoint[]> {
    const vm = await this.vm(replica);
    return (await this.pointCheckpoints(vm)).map((c) => this.toPoint(replica, c));
  }

  /** Removes restore point `point` (Hyper-V merges its files). */
  async deletePoint(replica: Replica, point: RestorePoint): Promise<void> {
    const vm = await this.vm(replica);
    const found = (await this.pointCheckpoints(vm)).find((c) => c.Id === point.id);
    if (found) await this.link.call(REMOVE_CHECKPOINT, { vm: vm.row.Name, name: found.Name });
    await writePointIds(
      this.files,
      vm.identity.dir,
      (await readPointIds(this.files, vm.identity.dir)).filter((id) => id !== point.id),
    );
  }

  /**
   * Returns the replica to `point`: pending writes are deleted, the later checkpoints removed
   * (newest first), then `Restore-VMSnapshot` applies the point; the replica is marked ready.
   */
  async revert(replica: Replica, point: RestorePoint): Promise<void> {
    const vm = await this.vm(replica);
    const list = await this.checkpoints(vm);
    const recorded = await readPointIds(this.files, vm.identity.dir);
    const at = list.findIndex((c) => c.Id === point.id && recorded.includes(c.Id));
    if (at < 0) throw new NotFoundError(`replica '${replica.id}' has no restore point '${point.id}'`);
    for (const p of await listPending(this.files, vm.identity.dir)) await this.files.remove(p.path);
    if (/^Running|^Paused/.test(vm.row.State)) await this.link.call(STOP_VM, { vm: vm.row.Name });
    for (const later of list.slice(at + 1).reverse()) {
      await this.link.call(REMOVE_CHECKPOINT, { vm: vm.row.Name, name: later.Name });
    }
    await this.link.call(RESTORE_CHECKPOINT, { vm: vm.row.Name, name: list[at]!.Name });
    const kept = new Set(list.slice(0, at + 1).map((c) => c.Id));
    await writePointIds(
      this.files,
      vm.identity.dir,
      recorded.filter((id) => kept.has(id)),
    );
    await writeMark(this.files, vm.identity.dir, 'ready');
  }

  /** The replica VM with id `vmId`, or undefined when that VM is no replica. */
  async replicaById(vmId: string): Promise<ReplicaVm | undefined> {
    const wanted = vmId.toLowerCase();
    return (await this.replicaVms()).find((r) => r.row.Id.toLowerCase() === wanted);
  }

  /** The live file of replica disk `diskId` (what a reader of the replica sees), or undefined. */
  async livePath(vm: ReplicaVm, diskId: string): Promise<string | undefined> {
    const index = vm.identity.disks.indexOf(diskId);
    if (index < 0) return undefined;
    return (await this.drives(vm.row.Name))[index]?.Path;
  }

  // ── helpers ─────────────────────────────────────────────────────────────────────────────────

  /**
   * The name of a new replica VM: the placement's `vmName`, or `<source>-replica`, `<source>-replica-2`…
   * whichever no VM of the host has. Hyper-V lets VMs share a name, and every cmdlet the driver
   * sends names the VM, so a shared name would make them act on another VM's checkpoints and disks.
   * A VM without notes left in `dir` by an interrupted `ensure` (made, not yet named a replica) is
   * removed first.
   */
  private async freeVmName(spec: ReplicaSpec, dir: string): Promise<string> {
    let rows = await this.noteRows();
    // `New-VM -Path` keeps the VM's files in that folder (Hyper-V itself in a sub-folder of it).
    const inDir = (path: string | null | undefined) => path === dir || path?.startsWith(`${dir}${sep}`) === true;
    const orphans = rows.filter((row) => !identityOf(row.Notes) && inDir(row.Path));
    for (const orphan of orphans) {
      if (rows.filter((row) => row.Name === orphan.Name).length === 1) {
        await this.link.call(REMOVE_VM, { vm: orphan.Name });
      }
    }
    if (orphans.length > 0) rows = await this.noteRows();
    const taken = new Set(rows.map((row) => row.Name.toLowerCase()));
    const placed = spec.placement?.vmName;
    if (typeof placed === 'string') {
      if (taken.has(placed.toLowerCase())) {
        throw new ConflictError(
          `a VM named '${placed}' exists on the Hyper-V host; name the replica VM (placement.vmName) after no existing VM`,
        );
      }
      return placed;
    }
    const base = `${spec.source.name}-replica`;
    for (let n = 1; ; n++) {
      const name = n === 1 ? base : `${base}-${n}`;
      if (!taken.has(name.toLowerCase())) return name;
    }
  }

  /** The job's `replicaPath`, or the host's default virtual hard disk folder (`Get-VMHost`). */
  private async replicaRoot(): Promise<string> {
    if (this.init.replicaPath) return this.init.replicaPath;
    const [row] = await this.link.call<{ VirtualHardDiskPath: string | null }>(HOST_DISK_FOLDER);
    const folder = row?.VirtualHardDiskPath;
    if (typeof folder !== 'string' || folder === '') {
      throw new InputError(
        "the Hyper-V host reports no default virtual hard disk folder; set the job target's replicaPath",
      );
    }
    return folder;
  }

  private async addNics(vm: string, spec: ReplicaSpec, plan: NicPlan): Promise<void> {
    for (const nic of plan.nics) {
      if (nic.switchName !== undefined) {
        await this.link.call(ADD_NIC_CONNECTED, { vm, nic: nic.name, mac: nic.mac, switch: nic.switchName });
      } else if (nic.mac !== undefined) {
        await this.link.call(ADD_NIC_DISCONNECTED, { vm, nic: nic.name, mac: nic.mac });
      } else {
        await this.link.call(ADD_NIC_DYNAMIC, { vm, nic: nic.name });
      }
    }
    if (plan.unmapped.length > 0) {
      const warn =
        this.init.onWarning ?? ((m: string) => process.emitWarning(m, { code: 'REPLIKIT_HYPERV_NETWORK_UNMAPPED' }));
      warn(
        `replica '${spec.name}': the adapters on source networks ${plan.unmapped.map((n) => `'${n}'`).join(', ')} are disconnected; add those networks to networkMap`,
      );
    }
  }

  private async dropPending(dir: string, keepKey: string): Promise<void> {
    for (const p of await listPending(this.files, dir)) {
      if (p.key !== keepKey || p.temporary) await this.files.remove(p.path);
    }
  }

  /** Every replica VM of the host (found by the identity in its notes). */
  async replicaVms(): Promise<ReplicaVm[]> {
    return this.replicasOf(await this.noteRows());
  }

  /** The replica VMs among `rows`. */
  private replicasOf(rows: NoteRow[]): ReplicaVm[] {
    const out: ReplicaVm[] = [];
    for (const row of rows) {
      const identity = identityOf(row.Notes) as (ReplicaIdentity & { disks?: unknown }) | undefined;
      if (identity && Array.isArray(identity.disks)) {
        out.push({ row, identity: { ...identity, disks: identity.disks.map(String) } });
      }
    }
    return out;
  }

  /**
   * The replica VM of `replica`, or `E_NOT_FOUND`; `E_CONFLICT` when another VM of the host has
   * its name (the cmdlets, which name the VM, would act on both).
   */
  async vm(replica: Replica): Promise<ReplicaVm> {
    const rows = await this.noteRows();
    const found = this.replicasOf(rows).find((r) => r.row.Id.toLowerCase() === replica.id.toLowerCase());
    if (!found) throw new NotFoundError(`replica '${replica.id}' no longer exists on this Hyper-V host`);
    const name = found.row.Name.toLowerCase();
    if (rows.filter((row) => row.Name.toLowerCase() === name).length > 1) {
      throw new ConflictError(
        `another VM of the Hyper-V host is named '${found.row.Name}' like replica '${replica.id}'; Hyper-V cmdlets would act on both: rename the other VM`,
        { details: { vmId: found.row.Id.toLowerCase() } },
      );
    }
    return found;
  }

  /** The hard disk drives of VM `vmName`, in drive order. */
  drives(vmName: string): Promise<DriveRow[]> {
    return this.link.call<DriveRow>(VM_DRIVES, { vm: vmName });
  }

  /** The checkpoints of a replica VM, oldest first. */
  checkpoints(vm: ReplicaVm): Promise<CheckpointRow[]> {
    return this.link.call<CheckpointRow>(LIST_CHECKPOINTS, { vm: vm.row.Name });
  }

  /** The checkpoints that are restore points (recorded when made), oldest first. */
  async pointCheckpoints(vm: ReplicaVm): Promise<CheckpointRow[]> {
    const recorded = new Set(await readPointIds(this.files, vm.identity.dir));
    return (await this.checkpoints(vm)).filter((c) => recorded.has(c.Id));
  }

  private async diskSizes(vmName: string): Promise<number[]> {
    const out: number[] = [];
    for (const d of await this.drives(vmName)) {
      const [row] = await this.link.call<VhdRow>(GET_VHD, { path: d.Path });
      out.push(row?.Size ?? -1);
    }
    return out;
  }

  private toPoint(replica: Replica, c: CheckpointRow): RestorePoint {
    return { id: c.Id, replicaId: replica.id, label: c.Name, createdAt: c.CreationTime };
  }

  /** Every VM of the host with its notes, state and folder. */
  noteRows(): Promise<NoteRow[]> {
    return this.link.call<NoteRow>(LIST_VM_NOTES);
  }

  /** Where replicas (and test clones) go, if set. */
  get replicaPath(): string | undefined {
    return this.init.replicaPath;
  }

  private toReplica(vm: ReplicaVm, spec: ReplicaSpec, created: boolean): Replica {
    const id = vm.row.Id.toLowerCase();
    const disks: DiskRef[] = spec.disks.map((d, i) => ({
      id: d.sourceDiskId,
      vmId: id,
      size: d.size,
      ...(d.label !== undefined ? { label: d.label } : {}),
      meta: { replicaIndex: i },
    }));
    return { id, name: spec.name, disks, created, meta: { vm: vm.row.Name } };
  }
}
