import type {
  DiskRef,
  Extent,
  Hypervisor,
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

/** Block size of the memory driver: the granule of its change tracking and `allocated()` extents. */
export const MEMORY_BLOCK_SIZE = 4096;
const B = MEMORY_BLOCK_SIZE;

/** The memory reference driver: a {@link Hypervisor} plus the hooks its fixtures use. */
export interface MemoryDriver extends Hypervisor {
  /** Creates a stopped source VM with zeroed disks (disk ids as given). */
  addVM(name: string, disks: Array<{ id: string; size: number }>): VMInfo;
  /** Writes into a source VM's disk as its guest would; the change tracker records the blocks. */
  guestWrite(vmId: string, diskId: string, offset: number, data: Uint8Array): void;
  /** Writes into a replica's committed disk behind replikit's back (changes its fingerprint). */
  outsideWrite(replicaId: string, diskId: string, offset: number, data: Uint8Array): void;
}

type Disks = Map<string, Uint8Array>;
type Mark = 'in-progress' | 'ready';
interface ReplicaState {
  mark: Mark;
  points: Array<{ point: RestorePoint; disks: Disks }>;
  /** Writes not yet in a restore point, and the run (`''`: none named) that made them. */
  pending?: { runId: string; disks: Disks };
  owner?: ReplicaOwner;
  /** Boots and outside writes: both move the fingerprint. */
  touched: number;
}
interface Vm {
  info: VMInfo;
  disks: Disks;
  /** The change log: each guest write's blocks, stamped with the driver's counter at that time. */
  writes: Array<{ stamp: number; diskId: string; blocks: number[] }>;
  replica?: ReplicaState;
}
/** A snapshot: its stamp orders it against the change log; `data` goes with `keepMetadata`. */
interface SnapshotRecord {
  snapshot: Snapshot;
  stamp: number;
  data?: Disks;
}

const copyAll = (disks: Disks): Disks => new Map([...disks].map(([k, v]) => [k, v.slice()]));
const clone = structuredClone;
const blocksOf = (offset: number, length: number) =>
  Array.from(
    { length: Math.ceil((offset + length) / B) - Math.floor(offset / B) },
    (_, i) => Math.floor(offset / B) + i,
  );

/** Ascending extents of the given blocks, merged, clipped to `size`. */
function extentsOf(blocks: Iterable<number>, size: number): Extent[] {
  const out: Extent[] = [];
  for (const b of [...new Set(blocks)].sort((x, y) => x - y)) {
    const last = out.at(-1);
    const length = Math.min(B, size - b * B);
    if (last && last.offset + last.length === b * B) last.length += length;
    else out.push({ offset: b * B, length });
  }
  return out;
}

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

/** The memory driver's class (the fault-injecting variant of the suite's own tests extends it). */
export class MemoryHypervisor extends AbstractHypervisor implements MemoryDriver {
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
  private readonly snaps = new Map<string, SnapshotRecord>();
  private counter = 0;

  // ── fixtures (what only the platform itself can do) ──
  addVM(name: string, disks: Array<{ id: string; size: number }>): VMInfo {
    const info: VMInfo = { id: name, name, cpus: 1, memoryMiB: 256, powerState: 'stopped', disks: [] };
    info.disks = disks.map((d) => ({ id: d.id, vmId: name, size: d.size }));
    this.vms.set(name, { info, disks: new Map(disks.map((d) => [d.id, new Uint8Array(d.size)])), writes: [] });
    return info;
  }
  guestWrite(vmId: string, diskId: string, offset: number, data: Uint8Array): void {
    const vm = this.vm(vmId);
    const disk = this.diskOf(vm, diskId);
    checkRange(disk.length, offset, data.length, 'guest write');
    disk.set(data, offset);
    vm.writes.push({ stamp: this.counter, diskId, blocks: blocksOf(offset, data.length) });
  }
  outsideWrite(replicaId: string, diskId: string, offset: number, data: Uint8Array): void {
    this.diskOf(this.vm(replicaId), diskId).set(data, offset);
    this.held(replicaId).touched++;
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
    this.snaps.set(id, { snapshot, stamp: this.counter, data: copyAll(vm.disks) });
    return clone(snapshot);
  }
  protected override async _listSnapshots(vmId: string) {
    this.vm(vmId);
    return [...this.snaps.values()].filter((r) => r.snapshot.vmId === vmId && r.data).map((r) => clone(r.snapshot));
  }
  protected override async _deleteSnapshot(snapshot: Snapshot, keepMetadata: boolean) {
    const record = this.snaps.get(snapshot.id);
    if (!record?.data) throw new NotFoundError(`no snapshot '${snapshot.id}'`);
    if (keepMetadata) delete record.data;
    else this.snaps.delete(snapshot.id);
  }
  /** The blocks the guest wrote between the two snapshots; `undefined` (hash-diff) when unknown. */
  protected override async _changes(disk: DiskRef, base: Snapshot, current: Snapshot) {
    const [a, b] = [this.snaps.get(base.id), this.snaps.get(current.id)];
    if (!a || !b || a.snapshot.vmId !== b.snapshot.vmId || a.stamp > b.stamp) return undefined;
    const writes = this.vms.get(b.snapshot.vmId)?.writes ?? [];
    const inRange = writes.filter((w) => w.diskId === disk.id && w.stamp >= a.stamp && w.stamp < b.stamp);
    const size = b.snapshot.disks.find((d) => d.id === disk.id)?.size ?? 0;
    const extents = extentsOf(
      inRange.flatMap((w) => w.blocks),
      size,
    );
    return (async function* () {
      yield* extents;
    })();
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
    if (existing && (!existing.replica || shape(existing.info.disks) !== shape(spec.disks))) {
      throw new ConflictError(`'${spec.name}' exists with another shape; delete it or pick another name`);
    }
    if (existing) return { id: spec.name, name: spec.name, disks: clone(existing.info.disks), created: false };
    const info = this.addVM(
      spec.name,
      spec.disks.map((d) => ({ id: d.sourceDiskId, size: d.size })),
    );
    this.vm(spec.name).replica = { mark: 'ready', points: [], touched: 0 };
    return { id: info.id, name: info.name, disks: info.disks, created: true };
  }
  protected override async _deleteReplica(replica: Replica) {
    this.held(replica.id);
    this.vms.delete(replica.id);
  }
  protected override async _openWriter(replica: Replica, disk: DiskRef, options?: WriterOptions) {
    const state = this.held(replica.id);
    const runId = options?.runId ?? '';
    if (state.owner && state.owner.runId !== options?.runId)
      throw new ConflictError(`replica '${replica.name}' is held by run ${state.owner.runId}`);
    this.diskOf(this.vm(replica.id), disk.id);
    // Another run's pending writes are never continued: start again from the last restore point.
    if (state.pending?.runId !== runId) state.pending = { runId, disks: copyAll(this.vm(replica.id).disks) };
    state.mark = 'in-progress';
    return new MemoryWriter(state.pending.disks.get(disk.id)!, `disk '${disk.id}' of '${replica.name}'`);
  }
  protected override async _replicaState(replica: Replica) {
    const s = this.held(replica.id);
    return { value: `${s.touched}:${s.points.at(-1)?.point.id ?? ''}:${s.pending?.runId ?? '-'}` };
  }
  protected override async _markReplica(replica: Replica, mark: Mark) {
    this.held(replica.id).mark = mark;
  }
  protected override async _replicaMark(replica: Replica) {
    return this.held(replica.id).mark;
  }
  protected override async _claimReplica(replica: Replica, owner: ReplicaOwner) {
    const state = this.held(replica.id);
    if (!state.owner || state.owner.runId === owner.runId) state.owner = clone(owner);
    return clone(state.owner);
  }
  protected override async _releaseReplica(replica: Replica, runId: string) {
    const state = this.held(replica.id);
    if (state.owner?.runId === runId) delete state.owner;
  }
  protected override async _replicaOwner(replica: Replica) {
    const owner = this.held(replica.id).owner;
    return owner && clone(owner);
  }
  protected override async _hasPendingWrites(replica: Replica) {
    return this.held(replica.id).pending !== undefined;
  }
  protected override async _createRestorePoint(replica: Replica, label: string) {
    const [vm, state] = [this.vm(replica.id), this.held(replica.id)];
    if (state.pending) vm.disks = state.pending.disks;
    delete state.pending;
    const point = { id: `rp-${++this.counter}`, replicaId: replica.id, label, createdAt: new Date().toISOString() };
    state.points.push({ point, disks: copyAll(vm.disks) });
    return clone(point);
  }
  protected override async _deleteRestorePoint(replica: Replica, point: RestorePoint) {
    const state = this.held(replica.id);
    state.points = state.points.filter((p) => p.point.id !== point.id);
  }
  protected override async _listRestorePoints(replica: Replica) {
    return this.held(replica.id).points.map((p) => clone(p.point));
  }
  protected override async _revertTo(replica: Replica, point: RestorePoint) {
    const state = this.held(replica.id);
    const at = state.points.findIndex((p) => p.point.id === point.id);
    if (at < 0) throw new NotFoundError(`no restore point '${point.id}' in replica '${replica.name}'`);
    state.points.splice(at + 1);
    this.vm(replica.id).disks = copyAll(state.points[at]!.disks);
    delete state.pending;
    state.mark = 'ready';
  }
  protected override async _power(vmId: string, op: 'start' | 'shutdown') {
    const vm = this.vm(vmId);
    if (op === 'start' && vm.replica?.mark === 'in-progress') {
      throw new ReplicaInProgressError(`replica '${vm.info.name}' is being written; let the run finish or revert it`);
    }
    vm.info.powerState = op === 'start' ? 'running' : 'stopped';
    if (op === 'start' && vm.replica) vm.replica.touched++;
  }

  // ── lookups ──
  private vm(id: string): Vm {
    const vm = this.vms.get(id);
    if (!vm) throw new NotFoundError(`no VM '${id}'; list VMs to see what exists`);
    return vm;
  }
  /** The replica state of a replica VM. */
  private held(id: string): ReplicaState {
    const replica = this.vm(id).replica;
    if (!replica) throw new NotFoundError(`'${id}' is not a replica`);
    return replica;
  }
  private diskOf(vm: Vm, diskId: string): Uint8Array {
    const disk = vm.disks.get(diskId);
    if (!disk) throw new NotFoundError(`no disk '${diskId}' in VM '${vm.info.id}'`);
    return disk;
  }
}

/** The conformance fixtures of the memory driver: what `runDriverConformance` needs besides the contract. */
export const memoryFixtures: DriverConformanceFixtures = {
  createSourceVM: async (hv, spec) => (hv as MemoryDriver).addVM(spec.name, spec.disks),
  writeGuest: async (hv, vmId, diskId, offset, data) => (hv as MemoryDriver).guestWrite(vmId, diskId, offset, data),
  writeOutside: async (hv, replica, diskId, offset, data) =>
    (hv as MemoryDriver).outsideWrite(replica.id, diskId, offset, data),
};
