import type {
  Capabilities,
  ChangeTracker,
  ClaimOptions,
  DiskReader,
  DiskRef,
  DiskWriter,
  Extent,
  Hypervisor,
  OperationOptions,
  Replica,
  ReplicaFingerprint,
  ReplicaOwner,
  ReplicaSpec,
  RestorePoint,
  RestorePointOptions,
  RevertOptions,
  Snapshot,
  VMInfo,
  WriterOptions,
} from '../contracts/index.js';
import {
  ConflictError,
  DriverError,
  InputError,
  NotFoundError,
  type ReplikitError,
  StateError,
  throwIfAborted,
} from '../errors.js';
import {
  assertId,
  assertOneOf,
  checkDiskRef,
  checkFence,
  checkLabel,
  checkReplica,
  checkReplicaSpec,
  checkRestorePoint,
  checkSnapshot,
} from './argument-checks.js';
import { wrapDriverError } from './wrap-error.js';

/**
 * The base a replikit driver stands on (as `abstract-level` is for Level stores): every public
 * {@link Hypervisor} method is written here once and does the plumbing — refuses calls after
 * `close()` (`E_STATE`), checks its arguments (ids, spec shapes, labels, enums: `E_INPUT`), rejects
 * an aborted `AbortSignal` before the hook runs (`E_ABORTED`; read-only calls check it again after),
 * wraps a foreign error into a `DriverError` with the original as `cause`, remembers the readers and
 * writers it hands out so that `close()` closes them, finds a VM by id or name, and makes
 * `createRestorePoint` idempotent per label with retention — then calls a small `_` hook that only
 * does the platform's part. Hooks receive checked arguments on an open driver.
 *
 * A source-only driver implements `_listVMs`, `_snapshot`, `_listSnapshots`, `_deleteSnapshot`,
 * `_openReader` (and `_changes` when it tracks changes); a target adds the replica hooks. A hook
 * a driver does not implement rejects with `E_DRIVER` saying so. Build readers and writers on
 * {@link AbstractDiskReader} and {@link AbstractDiskWriter}.
 *
 * @example
 * ```ts
 * class MyDriver extends AbstractHypervisor {
 *   readonly kind = 'my';
 *   readonly capabilities = { methods: ['qhybrid'], canBeSource: true, canBeTarget: false,
 *     changeTracking: false, formats: ['raw'], restorePoints: false };
 *   protected async _listVMs() { return api.vms(); }
 *   // … _snapshot, _listSnapshots, _deleteSnapshot, _openReader
 * }
 * ```
 */
export abstract class AbstractHypervisor implements Hypervisor {
  /** The driver kind (`xen`, `hyperv`, `file` or a third party's). */
  abstract readonly kind: string;
  /** What this driver can do; must agree with the hooks it implements. */
  abstract readonly capabilities: Capabilities;
  /** Readers and writers handed out and not closed yet; `close()` closes them. */
  protected readonly handedOut = new Set<{ close(): Promise<void> }>();
  /** Disks with a writer open: replica id, NUL, disk id. */
  private readonly writing = new Set<string>();
  private closedState = false;
  private trackerView: ChangeTracker | undefined;

  /** The change tracker built on {@link AbstractHypervisor._changes}, when the capabilities declare tracking. */
  get changeTracker(): ChangeTracker | undefined {
    if (!this.capabilities.changeTracking) return undefined;
    this.trackerView ??= {
      changes: (disk, base, current, options) =>
        this.query('changes', options, () => {
          checkDiskRef(disk, this.idCheck);
          checkSnapshot(base, this.idCheck);
          checkSnapshot(current, this.idCheck);
          return this._changes(disk, base, current, options);
        }),
      ...(this._pending && {
        pending: (disk: DiskRef, base: Snapshot, options?: OperationOptions) =>
          this.query('pending', options, () => {
            checkDiskRef(disk, this.idCheck);
            checkSnapshot(base, this.idCheck);
            return this._pending!(disk, base, options);
          }),
      }),
    };
    return this.trackerView;
  }

  /** Lists the VMs. */
  listVMs(options?: OperationOptions): Promise<VMInfo[]> {
    return this.query('listVMs', options, () => this._listVMs(options));
  }

  /** Finds a VM by id or name; rejects with `E_NOT_FOUND` when there is none. */
  getVM(idOrName: string, options?: OperationOptions): Promise<VMInfo> {
    return this.query(`getVM('${idOrName}')`, options, async () => {
      this._checkId(idOrName, 'VM id or name');
      const found = await this._getVM(idOrName, options);
      if (!found)
        throw new NotFoundError(`no VM '${idOrName}' on this ${this.kind} driver; list VMs to see what exists`);
      return found;
    });
  }

  /** Takes a crash-consistent snapshot of all the VM's disks at one instant. */
  snapshot(vmId: string, label: string, options?: OperationOptions): Promise<Snapshot> {
    return this.change(`snapshot of VM '${vmId}'`, options, () => {
      this._checkId(vmId, 'VM id');
      checkLabel(label, 'a snapshot label');
      return this._snapshot(vmId, label, options);
    });
  }

  /** Lists the snapshots of a VM, oldest first. */
  listSnapshots(vmId: string, options?: OperationOptions): Promise<Snapshot[]> {
    return this.query(`listing the snapshots of VM '${vmId}'`, options, () => {
      this._checkId(vmId, 'VM id');
      return this._listSnapshots(vmId, options);
    });
  }

  /** Deletes a snapshot; `keepMetadata` keeps what change tracking needs. */
  deleteSnapshot(snapshot: Snapshot, options?: OperationOptions & { keepMetadata?: boolean }): Promise<void> {
    return this.change(`deleting snapshot '${snapshot?.id}'`, options, () => {
      checkSnapshot(snapshot, this.idCheck);
      return this._deleteSnapshot(snapshot, options?.keepMetadata === true, options);
    });
  }

  /** Opens a disk for reading; `close()` of the driver closes it. */
  openReader(disk: DiskRef, options?: OperationOptions): Promise<DiskReader> {
    return this.handOut(`opening disk '${disk?.id}'`, options, () => {
      checkDiskRef(disk, this.idCheck);
      return this._openReader(disk, options);
    });
  }

  /** Creates the replica VM, or finds it when one of that name exists. */
  ensureReplica(spec: ReplicaSpec, options?: OperationOptions): Promise<Replica> {
    return this.change(`ensuring replica '${spec?.name}'`, options, () => {
      checkReplicaSpec(spec, this.idCheck);
      return this._ensureReplica(spec, options);
    });
  }

  /** Deletes a replica VM and its disks. */
  deleteReplica(replica: Replica, options?: OperationOptions): Promise<void> {
    return this.change(`deleting replica '${replica?.id}'`, options, () =>
      this._deleteReplica(this.replica(replica), options),
    );
  }

  /**
   * Opens one replica disk for writing; `close()` of the driver closes it. One writer per disk at a
   * time: a second one of this driver rejects with `E_CONFLICT` until the first is closed (a driver
   * whose replicas other processes may write adds its own lock).
   */
  openWriter(replica: Replica, disk: DiskRef, options?: WriterOptions): Promise<DiskWriter> {
    const key = `${replica?.id}\0${disk?.id}`;
    const what = `opening disk '${disk?.id}' of replica '${replica?.id}' for writing`;
    const open = async (): Promise<DiskWriter> => {
      this.replica(replica);
      checkDiskRef(disk, this.idCheck);
      if (options?.runId !== undefined) assertId(options.runId, 'runId');
      if (this.writing.has(key)) {
        throw new ConflictError(`disk '${disk.id}' of replica '${replica.id}' already has a writer; close it first`);
      }
      this.writing.add(key);
      try {
        return await this._openWriter(replica, disk, options);
      } catch (error) {
        this.writing.delete(key);
        throw error;
      }
    };
    return this.handOut(what, options, open, () => this.writing.delete(key));
  }

  /** Takes the replica for a run, atomically; resolves with the holder after the call. */
  claimReplica(replica: Replica, owner: ReplicaOwner, options?: ClaimOptions): Promise<ReplicaOwner> {
    return this.change(`claiming replica '${replica?.id}'`, options, () => {
      this.replica(replica);
      checkFence(options?.fence);
      if (typeof owner?.runId !== 'string' || owner.runId.length === 0) {
        throw new InputError('claimReplica: owner.runId must be a non-empty string');
      }
      return this._claimReplica(replica, owner, options);
    });
  }

  /** Ends the hold of run `runId`. */
  releaseReplica(replica: Replica, runId: string, options?: OperationOptions): Promise<void> {
    return this.change(`releasing replica '${replica?.id}'`, options, () => {
      assertId(runId, 'runId');
      return this._releaseReplica(this.replica(replica), runId, options);
    });
  }

  /** The run holding the replica, or `undefined`. */
  replicaOwner(replica: Replica, options?: OperationOptions): Promise<ReplicaOwner | undefined> {
    return this.query(`reading the owner of replica '${replica?.id}'`, options, () =>
      this._replicaOwner(this.replica(replica), options),
    );
  }

  /** The replica's current fingerprint. */
  replicaState(replica: Replica, options?: OperationOptions): Promise<ReplicaFingerprint> {
    return this.query(`reading the state of replica '${replica?.id}'`, options, () =>
      this._replicaState(this.replica(replica), options),
    );
  }

  /** Marks the replica as being written or as ready. */
  markReplica(replica: Replica, state: 'in-progress' | 'ready', options?: OperationOptions): Promise<void> {
    return this.change(`marking replica '${replica?.id}'`, options, () => {
      assertOneOf(state, ['in-progress', 'ready'], 'a replica mark');
      return this._markReplica(this.replica(replica), state, options);
    });
  }

  /** Returns `in-progress` or `ready`. */
  replicaMark(replica: Replica, options?: OperationOptions): Promise<'in-progress' | 'ready'> {
    return this.query(`reading the mark of replica '${replica?.id}'`, options, () =>
      this._replicaMark(this.replica(replica), options),
    );
  }

  /**
   * Makes the pending writes a new restore point. Idempotent per label when the driver implements
   * {@link AbstractHypervisor._hasPendingWrites}; keeps `retention` points when it implements
   * {@link AbstractHypervisor._deleteRestorePoint} (a driver implementing neither does both itself).
   */
  createRestorePoint(replica: Replica, label: string, options?: RestorePointOptions): Promise<RestorePoint> {
    return this.change(`creating restore point '${label}' of replica '${replica?.id}'`, options, async () => {
      this.replica(replica);
      checkLabel(label, 'a restore point label');
      checkFence(options?.fence);
      const retention = options?.retention;
      if (retention !== undefined && (!Number.isSafeInteger(retention) || retention < 1)) {
        throw new InputError(`retention must be a whole number ≥ 1, got ${retention}`);
      }
      if (this._hasPendingWrites) {
        const newest = (await this._listRestorePoints(replica, options)).at(-1);
        if (newest?.label === label && !(await this._hasPendingWrites(replica))) return newest;
      }
      const point = await this._createRestorePoint(replica, label, options);
      if (retention !== undefined && this._deleteRestorePoint) {
        const points = await this._listRestorePoints(replica, options);
        for (const old of points.slice(0, Math.max(0, points.length - retention))) {
          await this._deleteRestorePoint(replica, old);
        }
      }
      return point;
    });
  }

  /** Lists the replica's restore points, oldest first. */
  listRestorePoints(replica: Replica, options?: OperationOptions): Promise<RestorePoint[]> {
    return this.query(`listing the restore points of replica '${replica?.id}'`, options, () =>
      this._listRestorePoints(this.replica(replica), options),
    );
  }

  /** Drops every write made after `point` and returns the replica to it. */
  revertTo(replica: Replica, point: RestorePoint, options?: RevertOptions): Promise<void> {
    return this.change(`reverting replica '${replica?.id}'`, options, () => {
      checkRestorePoint(point, this.replica(replica), this.idCheck);
      checkFence(options?.fence);
      return this._revertTo(replica, point, options);
    });
  }

  /** Starts or shuts down a VM. */
  power(vmId: string, op: 'start' | 'shutdown', options?: OperationOptions): Promise<void> {
    return this.change(`power ${op} of VM '${vmId}'`, options, () => {
      this._checkId(vmId, 'VM id');
      assertOneOf(op, ['start', 'shutdown'], 'power: op');
      return this._power(vmId, op, options);
    });
  }

  /**
   * Closes the driver: every reader and writer still open is closed (writers flush and release
   * their disks), then {@link AbstractHypervisor._close} runs. Later calls reject with `E_STATE`;
   * calling `close()` twice is harmless. The first failure is thrown after all were tried.
   */
  async close(): Promise<void> {
    const first = !this.closedState;
    this.closedState = true;
    const open = [...this.handedOut];
    this.handedOut.clear();
    const results = await Promise.allSettled(open.map((handle) => handle.close()));
    if (first) results.push(...(await Promise.allSettled([this._close()])));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw wrapDriverError(failed.reason, `closing the ${this.kind} driver`);
  }

  // ── hooks ─────────────────────────────────────────────────────────────────────────────────

  /** Lists the VMs. */
  protected abstract _listVMs(options?: OperationOptions): Promise<VMInfo[]>;

  /** Finds a VM by id or name, or `undefined`. @default a scan of `_listVMs`: id first, then name */
  protected async _getVM(idOrName: string, options?: OperationOptions): Promise<VMInfo | undefined> {
    const vms = await this._listVMs(options);
    return vms.find((vm) => vm.id === idOrName) ?? vms.find((vm) => vm.name === idOrName);
  }

  /** Checks an id before it reaches a hook. @default {@link assertId}; a driver adds its own rule (paths). */
  protected _checkId(value: unknown, what: string): string {
    return assertId(value, what);
  }

  /** Turns a foreign error into a `ReplikitError`. @default {@link wrapDriverError} */
  protected _wrapError(error: unknown, what: string, signal?: AbortSignal): ReplikitError {
    return wrapDriverError(error, `${this.kind} driver: ${what}`, signal);
  }

  /** Releases the connection; called once, after the handed-out readers and writers are closed. */
  protected async _close(): Promise<void> {}

  /** See {@link Hypervisor.snapshot}. */
  protected _snapshot(_vmId: string, _label: string, _options?: OperationOptions): Promise<Snapshot> {
    return this.unsupported('snapshot');
  }
  /** See {@link Hypervisor.listSnapshots}. */
  protected _listSnapshots(_vmId: string, _options?: OperationOptions): Promise<Snapshot[]> {
    return this.unsupported('listSnapshots');
  }
  /** See {@link Hypervisor.deleteSnapshot}. */
  protected _deleteSnapshot(_snapshot: Snapshot, _keepMetadata: boolean, _options?: OperationOptions): Promise<void> {
    return this.unsupported('deleteSnapshot');
  }
  /** See {@link Hypervisor.openReader}. */
  protected _openReader(_disk: DiskRef, _options?: OperationOptions): Promise<DiskReader> {
    return this.unsupported('openReader');
  }
  /** See {@link ChangeTracker.changes}; used when `capabilities.changeTracking` is true. */
  protected _changes(
    _disk: DiskRef,
    _base: Snapshot,
    _current: Snapshot,
    _options?: OperationOptions,
  ): Promise<AsyncIterable<Extent> | undefined> {
    return this.unsupported('changes');
  }
  /**
   * See {@link ChangeTracker.pending}; optional. A tracking driver that can tell the live disk's
   * writes since a snapshot without taking one implements it, and `replikit plan` counts exactly.
   */
  protected _pending?(
    disk: DiskRef,
    base: Snapshot,
    options?: OperationOptions,
  ): Promise<AsyncIterable<Extent> | undefined>;
  /** See {@link Hypervisor.ensureReplica}. */
  protected _ensureReplica(_spec: ReplicaSpec, _options?: OperationOptions): Promise<Replica> {
    return this.unsupported('ensureReplica');
  }
  /** See {@link Hypervisor.deleteReplica}. */
  protected _deleteReplica(_replica: Replica, _options?: OperationOptions): Promise<void> {
    return this.unsupported('deleteReplica');
  }
  /** See {@link Hypervisor.openWriter}. */
  protected _openWriter(_replica: Replica, _disk: DiskRef, _options?: WriterOptions): Promise<DiskWriter> {
    return this.unsupported('openWriter');
  }
  /** See {@link Hypervisor.claimReplica}. */
  protected _claimReplica(_replica: Replica, _owner: ReplicaOwner, _options?: ClaimOptions): Promise<ReplicaOwner> {
    return this.unsupported('claimReplica');
  }
  /** See {@link Hypervisor.releaseReplica}. */
  protected _releaseReplica(_replica: Replica, _runId: string, _options?: OperationOptions): Promise<void> {
    return this.unsupported('releaseReplica');
  }
  /** See {@link Hypervisor.replicaOwner}. */
  protected _replicaOwner(_replica: Replica, _options?: OperationOptions): Promise<ReplicaOwner | undefined> {
    return this.unsupported('replicaOwner');
  }
  /** See {@link Hypervisor.replicaState}. */
  protected _replicaState(_replica: Replica, _options?: OperationOptions): Promise<ReplicaFingerprint> {
    return this.unsupported('replicaState');
  }
  /** See {@link Hypervisor.markReplica}. */
  protected _markReplica(
    _replica: Replica,
    _state: 'in-progress' | 'ready',
    _options?: OperationOptions,
  ): Promise<void> {
    return this.unsupported('markReplica');
  }
  /** See {@link Hypervisor.replicaMark}. */
  protected _replicaMark(_replica: Replica, _options?: OperationOptions): Promise<'in-progress' | 'ready'> {
    return this.unsupported('replicaMark');
  }
  /** Commits the pending writes as a new point (the base has checked label and retention). */
  protected _createRestorePoint(
    _replica: Replica,
    _label: string,
    _options?: RestorePointOptions,
  ): Promise<RestorePoint> {
    return this.unsupported('createRestorePoint');
  }
  /** True when writes are pending since the last restore point; enables the base's label idempotence. */
  protected _hasPendingWrites?(replica: Replica): Promise<boolean>;
  /** Deletes one (old) restore point; enables the base's retention. */
  protected _deleteRestorePoint?(replica: Replica, point: RestorePoint): Promise<void>;
  /** See {@link Hypervisor.listRestorePoints}. */
  protected _listRestorePoints(_replica: Replica, _options?: OperationOptions): Promise<RestorePoint[]> {
    return this.unsupported('listRestorePoints');
  }
  /** See {@link Hypervisor.revertTo}; `point` belongs to `replica`. */
  protected _revertTo(_replica: Replica, _point: RestorePoint, _options?: RevertOptions): Promise<void> {
    return this.unsupported('revertTo');
  }
  /** See {@link Hypervisor.power}. */
  protected _power(_vmId: string, _op: 'start' | 'shutdown', _options?: OperationOptions): Promise<void> {
    return this.unsupported('power');
  }

  // ── plumbing ──────────────────────────────────────────────────────────────────────────────

  /** Throws `E_STATE` once the driver is closed. */
  protected assertOpen(): void {
    if (this.closedState) throw new StateError(`the ${this.kind} driver is closed; create a new one`);
  }

  private readonly idCheck = (value: unknown, what: string): string => this._checkId(value, what);

  private replica(replica: Replica): Replica {
    return checkReplica(replica, this.idCheck);
  }

  private unsupported(method: string): Promise<never> {
    return Promise.reject(
      new DriverError(`the ${this.kind} driver does not implement ${method}; check its capabilities before calling it`),
    );
  }

  /** Runs a hook that changes something: checks state and signal before it. */
  private async change<T>(what: string, options: OperationOptions | undefined, hook: () => Promise<T>): Promise<T> {
    this.assertOpen();
    throwIfAborted(options?.signal);
    try {
      return await hook();
    } catch (error) {
      throw this._wrapError(error, what, options?.signal);
    }
  }

  /** Runs a read-only hook: checks state and signal before it, and the signal again after. */
  private async query<T>(what: string, options: OperationOptions | undefined, hook: () => Promise<T>): Promise<T> {
    const result = await this.change(what, options, hook);
    throwIfAborted(options?.signal);
    return result;
  }

  /** Runs a hook that opens a reader or writer and remembers it until it is closed. */
  private async handOut<T extends { close(): Promise<void> }>(
    what: string,
    options: OperationOptions | undefined,
    hook: () => Promise<T>,
    released?: () => void,
  ): Promise<T> {
    const handle = await this.change(what, options, hook);
    const close = handle.close.bind(handle);
    handle.close = async () => {
      this.handedOut.delete(handle);
      try {
        await close();
      } finally {
        released?.();
      }
    };
    if (this.closedState) {
      await handle.close(); // the driver was closed while it opened
      this.assertOpen();
    }
    this.handedOut.add(handle);
    return handle;
  }
}
