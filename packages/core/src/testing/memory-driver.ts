import type {
  DiskRef,
  Hypervisor,
  OperationOptions,
  Replica,
  ReplicaOwner,
  ReplicaSpec,
  RestorePoint,
  Snapshot,
  VMInfo,
  WriterOptions,
} from '../contracts/index.js';
import { AbstractDiskReader } from '../driver-kit/abstract-disk-reader.js';
import { AbstractDiskWriter } from '../driver-kit/abstract-disk-writer.js';
import { AbstractHypervisor } from '../driver-kit/abstract-hypervisor.js';
import { ConflictError, NotFoundError, ReplicaInProgressError } from '../errors.js';
import { checkRange } from '../util/range.js';
import type { DriverConformanceFixtures } from './conformance-types.js';
import type { MemorySnapshotRecord, MemoryTrackerFaults } from './memory-tracker.js';
import { MEMORY_BLOCK_SIZE as B, blocksOf, createMemoryTracker, extentsOf } from './memory-tracker.js';

/**
 * Faults the conformance suite's own tests inject to prove its checks catch them. A real driver
 * never sets these.
 */
export interface MemoryDriverFaults extends MemoryTrackerFaults {
  /** `snapshot()` ignores its `AbortSignal`. */
  ignoreSignal?: boolean;
  /** `close()` leaves the writers it handed out open. */
  leaveWriterOpen?: boolean;
}

/** Options of {@link createMemoryDriver}. */
export interface MemoryDriverOptions {
  /** Faults to inject (tests of the suite only). */
  faults?: MemoryDriverFaults;
}

type Disks = Map<string, Uint8Array>;
type Mark = 'in-progress' | 'ready';
interface ReplicaState {
  mark: Mark;
  points: Array<{ point: RestorePoint; disks: Disks }>;
  /** Writes not yet in a restore point, and the run (`''`: none named) that made them. */
  pending?: { runId: string; disks: Disks };
  owner?: ReplicaOwner;
  boots: number;
  outside: number;
}
interface Vm {
  info: VMInfo;
  disks: Disks;
  /** Blocks per disk written by the guest since the last snapshot. */
  dirty: Map<string, Set<number>>;
  replica?: ReplicaState;
}

/** The memory reference driver: a {@link Hypervisor} plus the hooks its fixtures use. */
export interface MemoryDriver extends Hypervisor {
  /** Creates a stopped source VM with zeroed disks (disk ids as given). */
  addVM(name: string, disks: Array<{ id: string; size: number }>): VMInfo;
  /** Writes into a source VM's disk as its guest would; the change tracker records the blocks. */
  guestWrite(vmId: string, diskId: string, offset: number, data: Uint8Array): void;
  /** Writes into a replica's committed disk behind replikit's back (changes its fingerprint). */
  outsideWrite(replicaId: string, diskId: string, offset: number, data: Uint8Array): void;
}

const copyAll = (disks: Disks): Disks => new Map([...disks].map(([k, v]) => [k, v.slice()]));
const clone = structuredClone;

class MemoryReader extends AbstractDiskReader {
  constructor(
    private readonly data: Uint8Array,
    what: string,
  ) {
    super({ size: data.length, blockSize: B, what });
  }
  protected async _readInto(offset: number, target: Uint8Array) {
    target.set(this.data.subarray(offset, offset + target.length));
  }
  protected override async *_allocated() {
    const used = blocksOf(0, this.size).filter((b) => this.data.subarray(b * B, b * B + B).some((v) => v !== 0));
    yield* extentsOf(used, this.size);
  }
}

class MemoryWriter extends AbstractDiskWriter {
  constructor(
    private readonly data: Uint8Array,
    what: string,
  ) {
    super({ size: data.length, what });
  }
  protected async _write(offset: number, bytes: Uint8Array) {
    this.data.set(bytes, offset);
  }
  protected async _writeZeroes(offset: number, length: number) {
    this.data.fill(0, offset, offset + length);
  }
}

class MemoryHypervisor extends AbstractHypervisor implements MemoryDriver {
  readonly kind = 'memory';
  readonly capabilities = {
    methods: ['qhybrid'],
    canBeSource: true,
    canBeTarget: true,
    changeTracking: true,
    formats: ['raw'],
    restorePoints: true,
  };
  private readonly vms = new Map<string, Vm>();
  private readonly snaps = new Map<string, MemorySnapshotRecord>();
  private readonly tracker;
  private counter = 0;

  constructor(private readonly faults: MemoryDriverFaults) {
    super();
    this.tracker = createMemoryTracker(this.snaps, faults);
  }

  // ── fixtures (what only the platform itself can do) ──
  addVM(name: string, disks: Array<{ id: string; size: number }>): VMInfo {
    const info: VMInfo = { id: name, name, cpus: 1, memoryMiB: 256, powerState: 'stopped', disks: [] };
    info.disks = disks.map((d) => ({ id: d.id, vmId: name, size: d.size }));
    const dirty = new Map(disks.map((d) => [d.id, new Set<number>()]));
    this.vms.set(name, { info, disks: new Map(disks.map((d) => [d.id, new Uint8Array(d.size)])), dirty });
    return info;
  }
  guestWrite(vmId: string, diskId: string, offset: number, data: Uint8Array): void {
    const disk = this.diskOf(this.vm(vmId), diskId);
    checkRange(disk.length, offset, data.length, 'guest write');
    disk.set(data, offset);
    for (const b of blocksOf(offset, data.length)) this.vm(vmId).dirty.get(diskId)!.add(b);
  }
  outsideWrite(replicaId: string, diskId: string, offset: number, data: Uint8Array): void {
    this.diskOf(this.vm(replicaId), diskId).set(data, offset);
    this.state(replicaId).outside++;
  }

  // ── faults the suite's own tests inject ──
  override snapshot(vmId: string, label: string, options?: OperationOptions): Promise<Snapshot> {
    return super.snapshot(vmId, label, this.faults.ignoreSignal ? {} : options);
  }
  override async close(): Promise<void> {
    if (this.faults.leaveWriterOpen) {
      for (const handle of this.handedOut) if (handle instanceof MemoryWriter) this.handedOut.delete(handle);
    }
    await super.close();
  }

  // ── source side ──
  protected async _listVMs() {
    return [...this.vms.values()].map((v) => clone(v.info));
  }
  protected override async _snapshot(vmId: string, label: string) {
    const vm = this.vm(vmId);
    const id = `snap-${++this.counter}`;
    const disks = vm.info.disks.map((d) => ({ ...d, snapshotId: id }));
    const snapshot: Snapshot = { id, vmId: vm.info.id, label, createdAt: new Date().toISOString(), disks };
    const changed = vm.dirty;
    vm.dirty = new Map([...changed.keys()].map((k) => [k, new Set<number>()]));
    this.snaps.set(id, { snapshot, seq: this.counter, data: copyAll(vm.disks), changed });
    return clone(snapshot);
  }
  protected override async _listSnapshots(vmId: string) {
    this.vm(vmId);
    return [...this.snaps.values()].filter((r) => r.snapshot.vmId === vmId && r.data).map((r) => clone(r.snapshot));
  }
  protected override async _deleteSnapshot(snapshot: Snapshot, keepMetadata: boolean) {
    const record = this.snaps.get(snapshot.id);
    if (!record?.data) throw new NotFoundError(`no snapshot '${snapshot.id}'`);
    if (keepMetadata) {
      delete record.data;
      return;
    }
    // Its changed blocks move to the next snapshot of the VM (or back to the live disks).
    this.snaps.delete(snapshot.id);
    const next = [...this.snaps.values()].find((r) => r.snapshot.vmId === snapshot.vmId && r.seq > record.seq);
    for (const [diskId, blocks] of record.changed) {
      const into = (next?.changed ?? this.vms.get(snapshot.vmId)?.dirty)?.get(diskId);
      for (const b of blocks) into?.add(b);
    }
  }
  protected override _changes(disk: DiskRef, base: Snapshot, current: Snapshot) {
    return this.tracker.changes(disk, base, current);
  }
  protected override async _openReader(disk: DiskRef) {
    const data = disk.snapshotId
      ? this.snaps.get(disk.snapshotId)?.data?.get(disk.id)
      : this.vms.get(disk.vmId)?.disks.get(disk.id);
    if (!data) throw new NotFoundError(`no disk '${disk.id}' in '${disk.snapshotId ?? disk.vmId}'`);
    return new MemoryReader(data, `disk '${disk.id}'`);
  }

  // ── target side ──
  protected override async _ensureReplica(spec: ReplicaSpec) {
    const existing = this.vms.get(spec.name);
    const shape = (d: Array<{ size: number }>) => d.map((x) => x.size).join(',');
    if (existing) {
      if (!existing.replica || shape(existing.info.disks) !== shape(spec.disks)) {
        throw new ConflictError(`'${spec.name}' exists with another shape; delete it or pick another name`);
      }
      return { id: spec.name, name: spec.name, disks: clone(existing.info.disks), created: false };
    }
    const info = this.addVM(
      spec.name,
      spec.disks.map((d) => ({ id: d.sourceDiskId, size: d.size })),
    );
    this.vm(spec.name).replica = { mark: 'ready', points: [], boots: 0, outside: 0 };
    return { id: info.id, name: info.name, disks: info.disks, created: true };
  }
  protected override async _deleteReplica(replica: Replica) {
    this.state(replica.id);
    this.vms.delete(replica.id);
  }
  protected override async _openWriter(replica: Replica, disk: DiskRef, options?: WriterOptions) {
    const { vm, state } = this.held(replica.id);
    const runId = options?.runId ?? '';
    if (state.owner && state.owner.runId !== options?.runId)
      throw new ConflictError(`replica '${replica.name}' is held by run ${state.owner.runId}`);
    this.diskOf(vm, disk.id);
    // Another run's pending writes are never continued: start again from the last restore point.
    if (state.pending?.runId !== runId) state.pending = { runId, disks: copyAll(vm.disks) };
    state.mark = 'in-progress';
    return new MemoryWriter(state.pending.disks.get(disk.id)!, `disk '${disk.id}' of '${replica.name}'`);
  }
  protected override async _replicaState(replica: Replica) {
    const s = this.state(replica.id);
    return { value: `${s.boots}:${s.outside}:${s.points.at(-1)?.point.id ?? ''}:${s.pending?.runId ?? '-'}` };
  }
  protected override async _markReplica(replica: Replica, mark: Mark) {
    this.state(replica.id).mark = mark;
  }
  protected override async _replicaMark(replica: Replica) {
    return this.state(replica.id).mark;
  }
  protected override async _claimReplica(replica: Replica, owner: ReplicaOwner) {
    const state = this.state(replica.id);
    if (state.owner && state.owner.runId !== owner.runId) return clone(state.owner);
    state.owner = clone(owner);
    return clone(owner);
  }
  protected override async _releaseReplica(replica: Replica, runId: string) {
    const state = this.state(replica.id);
    if (state.owner?.runId === runId) delete state.owner;
  }
  protected override async _replicaOwner(replica: Replica) {
    const owner = this.state(replica.id).owner;
    return owner && clone(owner);
  }
  protected override async _hasPendingWrites(replica: Replica) {
    return this.state(replica.id).pending !== undefined;
  }
  protected override async _createRestorePoint(replica: Replica, label: string) {
    const { vm, state } = this.held(replica.id);
    if (state.pending) vm.disks = state.pending.disks;
    delete state.pending;
    const point = { id: `rp-${++this.counter}`, replicaId: replica.id, label, createdAt: new Date().toISOString() };
    state.points.push({ point, disks: copyAll(vm.disks) });
    return clone(point);
  }
  protected override async _deleteRestorePoint(replica: Replica, point: RestorePoint) {
    const state = this.state(replica.id);
    state.points = state.points.filter((p) => p.point.id !== point.id);
  }
  protected override async _listRestorePoints(replica: Replica) {
    return this.state(replica.id).points.map((p) => clone(p.point));
  }
  protected override async _revertTo(replica: Replica, point: RestorePoint) {
    const { vm, state } = this.held(replica.id);
    const at = state.points.findIndex((p) => p.point.id === point.id);
    if (at < 0) throw new NotFoundError(`no restore point '${point.id}' in replica '${replica.name}'`);
    state.points.splice(at + 1);
    vm.disks = copyAll(state.points[at]!.disks);
    delete state.pending;
    state.mark = 'ready';
  }
  protected override async _power(vmId: string, op: 'start' | 'shutdown') {
    const vm = this.vm(vmId);
    if (op === 'start' && vm.replica?.mark === 'in-progress') {
      throw new ReplicaInProgressError(`replica '${vm.info.name}' is being written; let the run finish or revert it`);
    }
    vm.info.powerState = op === 'start' ? 'running' : 'stopped';
    if (op === 'start' && vm.replica) vm.replica.boots++;
  }

  // ── lookups ──
  private vm(id: string): Vm {
    const vm = this.vms.get(id);
    if (!vm) throw new NotFoundError(`no VM '${id}'; list VMs to see what exists`);
    return vm;
  }
  /** A replica VM and its replica state. */
  private held(id: string): { vm: Vm; state: ReplicaState } {
    const vm = this.vm(id);
    if (!vm.replica) throw new NotFoundError(`'${id}' is not a replica`);
    return { vm, state: vm.replica };
  }
  private state(id: string): ReplicaState {
    return this.held(id).state;
  }
  private diskOf(vm: Vm, diskId: string): Uint8Array {
    const disk = vm.disks.get(diskId);
    if (!disk) throw new NotFoundError(`no disk '${diskId}' in VM '${vm.info.id}'`);
    return disk;
  }
}

/**
 * Creates the memory reference driver of `@replikit/core/testing`, written on
 * {@link AbstractHypervisor}: disks in memory, block-level change tracking, pending replica writes
 * kept apart from the last restore point, one writer per disk and replica holds. The base does the
 * rest (closed state, argument checks, cancellation, `close()` closing what it handed out, label
 * idempotence and retention). It runs the conformance suite; copy its shape when writing a driver.
 */
export function createMemoryDriver(options: MemoryDriverOptions = {}): MemoryDriver {
  return new MemoryHypervisor(options.faults ?? {});
}

/** The conformance fixtures of the memory driver: what `runDriverConformance` needs besides the contract. */
export const memoryFixtures: DriverConformanceFixtures = {
  createSourceVM: async (hv, spec) => (hv as MemoryDriver).addVM(spec.name, spec.disks),
  writeGuest: async (hv, vmId, diskId, offset, data) => (hv as MemoryDriver).guestWrite(vmId, diskId, offset, data),
  writeOutside: async (hv, replica, diskId, offset, data) =>
    (hv as MemoryDriver).outsideWrite(replica.id, diskId, offset, data),
};
