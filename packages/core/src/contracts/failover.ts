import type { Extent, OperationOptions } from './disk.js';
import type { PowerState, Replica, RestorePoint } from './hypervisor.js';

/**
 * How a disposable clone is connected: `isolated` (no network at all, the default) or `mapped`
 * (each of the replica's networks replaced by the one `map` names; networks not in the map are
 * left unconnected).
 */
export type CloneNetwork = { mode: 'isolated' } | { mode: 'mapped'; map: Record<string, string> };

/** Options of {@link FailoverHooks.cloneRestorePoint}. */
export interface CloneOptions extends OperationOptions {
  /** Name of the clone VM. The same name finds the same clone again (the call is idempotent). */
  name: string;
  /** The operation that makes the clone (recorded on it, so an orphan names its maker). */
  operationId: string;
  /**
   * How the clone is connected.
   * @default { mode: 'isolated' }
   */
  network?: CloneNetwork;
}

/** A disposable clone of a replica's restore point. Plain data. */
export interface CloneInfo {
  /** The driver's id for the clone VM (what `power`, `getVM` and `destroyClone` take). */
  id: string;
  /** The clone's name. */
  name: string;
  /** The replica it was cloned from. */
  replicaId: string;
  /** The restore point it holds. */
  pointId: string;
  /** The operation that made it. */
  operationId: string;
  /** ISO 8601 creation time. */
  createdAt: string;
  /** Power state when listed. */
  powerState: PowerState;
  /** The networks the clone is connected to (empty when isolated). */
  networks: string[];
  /** An address the clone answers on, when the platform knows one (a health check gets it). */
  address?: string;
}

/**
 * A replica's failover state as the driver keeps it beside the replica:
 * - `replica`: an ordinary replica (runs write it, it does not run);
 * - `promoted`: failed over at `pointId` (start unblocked, runs refused, undo possible);
 * - `committed`: failed over for good (runs refused, undo no longer possible).
 */
export interface ReplicaFailoverMark {
  /** See above. */
  state: 'replica' | 'promoted' | 'committed';
  /** The restore point the replica was promoted from (`promoted` and `committed`). */
  pointId?: string;
}

/**
 * A VM's live disk opened by {@link FailoverHooks.openLiveDisk}: what reverse replication reads
 * from a promoted replica and writes into the original VM.
 */
export interface LiveDisk {
  /** Virtual size in bytes. */
  readonly size: number;
  /** Reads `length` bytes at `offset` of the live image. */
  read(offset: number, length: number): Promise<Uint8Array>;
  /** Writes `data` at `offset` (as the guest would; tracked writes stay tracked). Only when opened for `write`. */
  write(offset: number, data: Uint8Array): Promise<void>;
  /** Makes the writes durable and releases the disk. Calling it twice is harmless. */
  close(): Promise<void>;
}

/**
 * The optional hooks of a `Hypervisor` that can fail over (declared by
 * `capabilities.failover`). The engine's failover operations (`@replikit/core`'s
 * `FailoverEngine`) journal every step, so each hook must be idempotent: called again after a
 * crash at any instant, it finishes what it started, and called again after it finished, it
 * changes nothing. A driver that lacks them makes those operations fail with `E_UNSUPPORTED`.
 */
export interface FailoverHooks {
  /**
   * Creates a disposable VM named `options.name` whose disks hold exactly restore point `point` of
   * the replica; the replica and its restore points are not changed (replication may go on
   * meanwhile). The clone is stopped and connected as `options.network` says. Idempotent by name.
   */
  cloneRestorePoint?(replica: Replica, point: RestorePoint, options: CloneOptions): Promise<CloneInfo>;
  /**
   * Stops and deletes a clone made by {@link cloneRestorePoint}. A clone that is gone is fine;
   * a VM that is not a clone is refused with `E_CONFLICT`.
   */
  destroyClone?(cloneId: string, options?: OperationOptions): Promise<void>;
  /** Lists the clones of a replica (every clone when `replica` is omitted), oldest first. */
  listClones?(replica?: Replica, options?: OperationOptions): Promise<CloneInfo[]>;
  /**
   * Fails the replica over at its newest restore point `point`: keeps what undoing needs (the
   * point, byte for byte), unblocks its start and starts it. From then on `claimReplica` and
   * `openWriter` reject with `E_FAILED_OVER` (no run writes a promoted replica). Rejects with
   * `E_CONFLICT` when a run holds the replica or `point` is not the newest.
   */
  promoteReplica?(replica: Replica, point: RestorePoint, options?: OperationOptions): Promise<void>;
  /**
   * Undoes {@link promoteReplica}: stops the replica, returns its disks to the point it was
   * promoted from byte for byte (the failover's writes are discarded), keeps its restore points
   * and makes it an ordinary replica again. Rejects with `E_FAILED_OVER` once committed.
   */
  demoteReplica?(replica: Replica, options?: OperationOptions): Promise<void>;
  /** Makes a promotion final: what undo needed is dropped; runs stay refused. */
  commitFailover?(replica: Replica, options?: OperationOptions): Promise<void>;
  /**
   * Turns a committed replica into an ordinary VM of the platform (permanent failover): it is no
   * replica any more, so `ensureReplica` of its name rejects with `E_CONFLICT` and no run can
   * overwrite it.
   */
  retireReplica?(replica: Replica, options?: OperationOptions): Promise<void>;
  /** The replica's failover state. */
  failoverMark?(replica: Replica, options?: OperationOptions): Promise<ReplicaFailoverMark>;
  /** Stops a VM at once, without asking the guest (the force after a shutdown timed out). */
  powerOff?(vmId: string, options?: OperationOptions): Promise<void>;
  /**
   * Reverse replication (optional; without it `failover reverse` and `failback` are refused with
   * `E_UNSUPPORTED`): the extents of disk `diskId` of the promoted `replica` written since its
   * promotion, ascending and not overlapping, or `undefined` when the driver cannot tell (the
   * engine then compares every block of both sides).
   */
  promotedChanges?(replica: Replica, diskId: string, options?: OperationOptions): Promise<Extent[] | undefined>;
  /**
   * Reverse replication: opens disk `diskId` of VM `vmId` as it is now. `read` works on a running
   * VM (a promoted replica); `write` is for a stopped VM that is not a replica (the original VM)
   * and rejects with `E_CONFLICT` otherwise. A tracking driver records the writes in its change
   * tracking, so the next forward run sees them as changed.
   */
  openLiveDisk?(vmId: string, diskId: string, mode: 'read' | 'write', options?: OperationOptions): Promise<LiveDisk>;
}
