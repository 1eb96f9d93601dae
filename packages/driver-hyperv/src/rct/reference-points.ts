import { join } from 'node:path';
import { type HyperVHostFiles, LOCAL_HOST_FILES } from '../host-files/host-files.js';

/** The RCT reference point a converted checkpoint became: one RCT id per disk, in drive order. */
export interface StoredReferencePoint {
  /** The reference point's `InstanceID`, for `DestroyReferencePoint`. */
  instanceId: string;
  /** `ResilientChangeTrackingIdentifiers`, one per disk in the checkpoint's drive order. */
  rctIds: string[];
}

/**
 * A `ConvertToReferencePoint` the driver began and has not seen the end of: the checkpoint it
 * converts, and the VM's reference points just before the call.
 */
export interface PendingConversion {
  /** The recovery checkpoint being converted. */
  checkpointId: string;
  /** `InstanceID`s of the VM's reference points before the call. */
  before: string[];
}

/**
 * A recovery checkpoint the driver asked for and has not named yet: WMI's `CreateSnapshot` gives it
 * Hyper-V's default name, and the driver renames it to the run's label next. A crash between the
 * two would leave a checkpoint no run can find by its label.
 */
export interface PendingSnapshot {
  /** The label the checkpoint is to get (`replikit-<runId>`). */
  label: string;
  /** Ids of the VM's checkpoints just before the call. */
  before: string[];
}

/**
 * Where the driver remembers which checkpoint became which reference point (WMI does not keep the
 * checkpoint's id on the reference point): one JSON file per VM in a `replikit-rct` folder of the
 * VM's own folder on the host, written atomically, through the driver's host files (local, or a
 * `replikit-agent` on the host).
 */
export class ReferencePointStore {
  constructor(
    private readonly folder: string,
    private readonly files: HyperVHostFiles = LOCAL_HOST_FILES,
  ) {}

  /** The store of the VM whose configuration folder is `vmPath`. */
  static of(vmPath: string, files: HyperVHostFiles = LOCAL_HOST_FILES): ReferencePointStore {
    return new ReferencePointStore(join(vmPath, 'replikit-rct'), files);
  }

  /** The reference point checkpoint `checkpointId` of VM `vmId` became, if any. */
  async get(vmId: string, checkpointId: string): Promise<StoredReferencePoint | undefined> {
    return (await this.load(vmId))[checkpointId];
  }

  /** Records that checkpoint `checkpointId` became `point`. */
  async set(vmId: string, checkpointId: string, point: StoredReferencePoint): Promise<void> {
    const all = await this.load(vmId);
    all[checkpointId] = point;
    await this.save(vmId, all);
  }

  /** Forgets checkpoint `checkpointId`. */
  async delete(vmId: string, checkpointId: string): Promise<void> {
    const all = await this.load(vmId);
    delete all[checkpointId];
    await this.save(vmId, all);
  }

  /** Every reference point recorded for VM `vmId` (their `InstanceID`s). */
  async recorded(vmId: string): Promise<Set<string>> {
    return new Set(Object.values(await this.load(vmId)).map((p) => p.instanceId));
  }

  /** Records, before the call, that a conversion of VM `vmId` begins. */
  async beginConversion(vmId: string, pending: PendingConversion): Promise<void> {
    await this.files.writeText(`${this.file(vmId)}.converting`, `${JSON.stringify(pending)}\n`);
  }

  /** The conversion of VM `vmId` that began and was not ended, if any. */
  async pendingConversion(vmId: string): Promise<PendingConversion | undefined> {
    const text = await this.files.readText(`${this.file(vmId)}.converting`);
    return text?.trim() ? (JSON.parse(text) as PendingConversion) : undefined;
  }

  /** Records that the conversion of VM `vmId` is settled (its point recorded, or known not made). */
  async endConversion(vmId: string): Promise<void> {
    await this.files.writeText(`${this.file(vmId)}.converting`, '');
  }

  /** Records, before the call, that a recovery checkpoint of VM `vmId` labelled `pending.label` is asked for. */
  async beginSnapshot(vmId: string, pending: PendingSnapshot): Promise<void> {
    await this.files.writeText(`${this.file(vmId)}.snapshotting`, `${JSON.stringify(pending)}\n`);
  }

  /** The recovery checkpoint of VM `vmId` that was asked for and not named yet, if any. */
  async pendingSnapshot(vmId: string): Promise<PendingSnapshot | undefined> {
    const text = await this.files.readText(`${this.file(vmId)}.snapshotting`);
    return text?.trim() ? (JSON.parse(text) as PendingSnapshot) : undefined;
  }

  /** Records that the checkpoint asked for VM `vmId` is named (or known not made). */
  async endSnapshot(vmId: string): Promise<void> {
    await this.files.writeText(`${this.file(vmId)}.snapshotting`, '');
  }

  /**
   * Records that the disks of VM `vmId` were written at `time` (ISO 8601) where RCT cannot see it
   * (replikit rewrote a live file itself): changes since a snapshot older than that are unknown.
   */
  async distrustBefore(vmId: string, time: string): Promise<void> {
    await this.files.writeText(`${this.file(vmId)}.untracked`, `${time}\n`);
  }

  /** When the disks of VM `vmId` were last written where RCT cannot see it (ISO 8601), or undefined. */
  async distrustedBefore(vmId: string): Promise<string | undefined> {
    return (await this.files.readText(`${this.file(vmId)}.untracked`))?.trim() || undefined;
  }

  private file(vmId: string): string {
    if (!/^[0-9A-Fa-f-]{36}$/.test(vmId)) throw new Error(`'${vmId}' is not a Hyper-V VM id`);
    return join(this.folder, `${vmId.toLowerCase()}.json`);
  }

  private async load(vmId: string): Promise<Record<string, StoredReferencePoint>> {
    const text = await this.files.readText(this.file(vmId));
    return text === undefined ? {} : (JSON.parse(text) as Record<string, StoredReferencePoint>);
  }

  private async save(vmId: string, all: Record<string, StoredReferencePoint>): Promise<void> {
    await this.files.writeText(this.file(vmId), `${JSON.stringify(all)}\n`);
  }
}
