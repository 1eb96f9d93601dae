import type {
  Capabilities,
  DiskReader,
  DiskRef,
  DiskWriter,
  Hypervisor,
  OperationOptions,
  Replica,
  ReplicaOwner,
  RestorePoint,
  Snapshot,
  VMInfo,
} from '../contracts/index.js';
import { ConflictError, NotFoundError, ReplicaInProgressError, StateError, throwIfAborted } from '../errors.js';
import { checkRange } from '../util/range.js';
import type { DriverConformanceFixtures } from './conformance-types.js';
import {
  blocksOf,
  createMemoryTracker,
  extentsOf,
  MEMORY_BLOCK_SIZE,
  type MemorySnapshotRecord,
  type MemoryTrackerFaults,
} from './memory-tracker.js';

const B = MEMORY_BLOCK_SIZE;

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

interface Disk {
  data: Uint8Array;
  /** Blocks written by the guest since the last snapshot. */
  dirty: Set<number>;
}
interface Vm {
  info: VMInfo;
  disks: Map<string, Disk>;
  replica?: {
    mark: 'in-progress' | 'ready';
    points: Array<{ point: RestorePoint; disks: Map<string, Uint8Array> }>;
    /** Writes not yet in a restore point, and the run (`''`: none named) that made them. */
    pending?: { runId: string; disks: Map<string, Uint8Array> };
    owner?: ReplicaOwner;
    boots: number;
    outside: number;
  };
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

const copyAll = (m: Map<string, Uint8Array>) => new Map([...m].map(([k, v]) => [k, v.slice()]));

/**
 * Creates the memory reference driver of `@replikit/core/testing`: every contract rule in a few
 * hundred lines, with disks in memory, block-level change tracking, pending replica writes kept
 * apart from the last restore point, one writer per disk, replica holds, cancellation, and a
 * `close()` that closes what it handed out. It runs the conformance suite; copy its shape when
 * writing a driver.
 */
export function createMemoryDriver(options: MemoryDriverOptions = {}): MemoryDriver {
  const faults = options.faults ?? {};
  const vms = new Map<string, Vm>();
  const snaps = new Map<string, MemorySnapshotRecord>();
  const writers = new Map<string, DiskWriter>(); // key: replica id + disk id
  const handedOut = new Set<{ close(): Promise<void> }>();
  let counter = 0;
  let closed = false;
  const capabilities: Capabilities = {
    methods: ['qhybrid'],
    canBeSource: true,
    canBeTarget: true,
    changeTracking: true,
    formats: ['raw'],
    restorePoints: true,
  };
  const enter = (opts?: OperationOptions): void => {
    if (closed) throw new StateError('the memory driver is closed; create a new one');
    throwIfAborted(opts?.signal);
  };
  const vmOf = (idOrName: string): Vm => {
    const vm = vms.get(idOrName) ?? [...vms.values()].find((v) => v.info.name === idOrName);
    if (!vm) throw new NotFoundError(`no VM '${idOrName}'; list VMs to see what exists`);
    return vm;
  };
  const replicaOf = (id: string) => {
    const state = vmOf(id).replica;
    if (!state) throw new NotFoundError(`'${id}' is not a replica`);
    return state;
  };
  /** What a reader of `disk` sees: a snapshot's content, or a VM disk (for a replica, its last point). */
  const contentOf = (disk: DiskRef): Uint8Array => {
    const data = disk.snapshotId
      ? snaps.get(disk.snapshotId)?.data?.get(disk.id)
      : vmOf(disk.vmId).disks.get(disk.id)?.data;
    if (!data) throw new NotFoundError(`no disk '${disk.id}' in '${disk.snapshotId ?? disk.vmId}'`);
    return data;
  };
  const track = <T extends { close(): Promise<void> }>(handle: T): T => {
    const close = handle.close.bind(handle);
    handle.close = async () => {
      handedOut.delete(handle);
      await close();
    };
    handedOut.add(handle);
    return handle;
  };

  const changeTracker = createMemoryTracker(snaps, faults, () => enter());

  const driver: MemoryDriver = {
    kind: 'memory',
    capabilities,
    changeTracker,
    addVM(name, disks) {
      const info: VMInfo = { id: name, name, cpus: 1, memoryMiB: 256, powerState: 'stopped', disks: [] };
      info.disks = disks.map((d) => ({ id: d.id, vmId: name, size: d.size }));
      vms.set(name, {
        info,
        disks: new Map(disks.map((d) => [d.id, { data: new Uint8Array(d.size), dirty: new Set() }])),
      });
      return info;
    },
    guestWrite(vmId, diskId, offset, data) {
      const disk = vmOf(vmId).disks.get(diskId);
      if (!disk) throw new NotFoundError(`no disk '${diskId}' in VM '${vmId}'`);
      checkRange(disk.data.length, offset, data.length, 'guest write');
      disk.data.set(data, offset);
      for (const b of blocksOf(offset, data.length)) disk.dirty.add(b);
    },
    outsideWrite(replicaId, diskId, offset, data) {
      const vm = vmOf(replicaId);
      vm.disks.get(diskId)!.data.set(data, offset);
      replicaOf(replicaId).outside++;
    },
    async listVMs(opts) {
      enter(opts);
      return [...vms.values()].map((v) => structuredClone(v.info));
    },
    async getVM(idOrName, opts) {
      enter(opts);
      return structuredClone(vmOf(idOrName).info);
    },
    async snapshot(vmId, label, opts) {
      enter(faults.ignoreSignal ? undefined : opts);
      const vm = vmOf(vmId);
      const id = `snap-${++counter}`;
      const snapshot: Snapshot = { id, vmId: vm.info.id, label, createdAt: new Date().toISOString(), disks: [] };
      snapshot.disks = vm.info.disks.map((d) => ({ ...d, snapshotId: id }));
      const changed = new Map([...vm.disks].map(([k, d]) => [k, d.dirty]));
      for (const d of vm.disks.values()) d.dirty = new Set();
      const data = new Map([...vm.disks].map(([k, d]) => [k, d.data.slice()]));
      snaps.set(id, { snapshot, seq: counter, data, changed });
      return structuredClone(snapshot);
    },
    async listSnapshots(vmId, opts) {
      enter(opts);
      vmOf(vmId);
      return [...snaps.values()]
        .filter((r) => r.snapshot.vmId === vmId && r.data)
        .map((r) => structuredClone(r.snapshot));
    },
    async deleteSnapshot(snapshot, opts) {
      enter(opts);
      const record = snaps.get(snapshot.id);
      if (!record?.data) throw new NotFoundError(`no snapshot '${snapshot.id}'`);
      if (opts?.keepMetadata) {
        delete record.data;
        return;
      }
      // Its changed blocks move to the next snapshot of the VM (or back to the live disks).
      snaps.delete(snapshot.id);
      const next = [...snaps.values()].find((r) => r.snapshot.vmId === snapshot.vmId && r.seq > record.seq);
      for (const [diskId, blocks] of record.changed) {
        const into = next ? next.changed.get(diskId) : vms.get(snapshot.vmId)?.disks.get(diskId)?.dirty;
        for (const b of blocks) into?.add(b);
      }
    },
    async openReader(disk, opts): Promise<DiskReader> {
      enter(opts);
      const data = contentOf(disk);
      let open = true;
      const live = () => {
        if (!open) throw new StateError(`reader of disk '${disk.id}' is closed; open a new one`);
      };
      return track<DiskReader>({
        size: data.length,
        blockSize: B,
        async *allocated() {
          live();
          yield* extentsOf(
            blocksOf(0, data.length).filter((b) => data.subarray(b * B, b * B + B).some((v) => v !== 0)),
            data.length,
          );
        },
        async read(offset, length) {
          live();
          checkRange(data.length, offset, length, 'read');
          return data.slice(offset, offset + length);
        },
        async close() {
          open = false;
        },
      });
    },
    async ensureReplica(spec, opts) {
      enter(opts);
      const existing = vms.get(spec.name);
      const shape = (d: Array<{ size: number }>) => d.map((x) => x.size).join(',');
      if (existing) {
        if (!existing.replica || shape(existing.info.disks) !== shape(spec.disks)) {
          throw new ConflictError(`'${spec.name}' exists with another shape; delete it or pick another name`);
        }
        return { id: spec.name, name: spec.name, disks: structuredClone(existing.info.disks), created: false };
      }
      const info = driver.addVM(
        spec.name,
        spec.disks.map((d) => ({ id: d.sourceDiskId, size: d.size })),
      );
      vmOf(spec.name).replica = { mark: 'ready', points: [], boots: 0, outside: 0 };
      return { id: info.id, name: info.name, disks: info.disks, created: true };
    },
    async deleteReplica(replica, opts) {
      enter(opts);
      replicaOf(replica.id);
      vms.delete(replica.id);
    },
    async openWriter(replica: Replica, disk: DiskRef, opts): Promise<DiskWriter> {
      enter(opts);
      const vm = vmOf(replica.id);
      const state = replicaOf(replica.id);
      const runId = opts?.runId ?? '';
      if (state.owner && state.owner.runId !== opts?.runId)
        throw new ConflictError(`replica '${replica.name}' is held by run ${state.owner.runId}`);
      if (!vm.disks.has(disk.id)) throw new NotFoundError(`no disk '${disk.id}' in replica '${replica.name}'`);
      const key = `${replica.id}\0${disk.id}`;
      if (writers.has(key))
        throw new ConflictError(`disk '${disk.id}' of '${replica.name}' already has a writer; close it first`);
      // Another run's pending writes are never continued: start again from the last restore point.
      if (state.pending?.runId !== runId) {
        state.pending = { runId, disks: new Map([...vm.disks].map(([k, d]) => [k, d.data.slice()])) };
      }
      state.mark = 'in-progress';
      const data = state.pending.disks.get(disk.id)!;
      let open = true;
      const live = (offset: number, length: number, what: string) => {
        if (!open) throw new StateError(`writer of disk '${disk.id}' is closed; open a new one`);
        checkRange(data.length, offset, length, what);
      };
      const writer = track<DiskWriter>({
        size: data.length,
        async write(offset, bytes) {
          live(offset, bytes.length, 'write');
          data.set(bytes, offset);
        },
        async writeZeroes(offset, length) {
          live(offset, length, 'writeZeroes');
          data.fill(0, offset, offset + length);
        },
        async flush() {
          live(0, 0, 'flush');
        },
        async close() {
          if (faults.leaveWriterOpen && closed) return;
          open = false;
          writers.delete(key);
        },
      });
      writers.set(key, writer);
      return writer;
    },
    async replicaState(replica, opts) {
      enter(opts);
      const s = replicaOf(replica.id);
      return { value: `${s.boots}:${s.outside}:${s.points.at(-1)?.point.id ?? ''}:${s.pending?.runId ?? '-'}` };
    },
    async markReplica(replica, mark, opts) {
      enter(opts);
      replicaOf(replica.id).mark = mark;
    },
    async claimReplica(replica, owner, opts) {
      enter(opts);
      const state = replicaOf(replica.id);
      if (state.owner && state.owner.runId !== owner.runId) return structuredClone(state.owner);
      state.owner = structuredClone(owner);
      return structuredClone(owner);
    },
    async releaseReplica(replica, runId, opts) {
      enter(opts);
      const state = replicaOf(replica.id);
      if (state.owner?.runId === runId) delete state.owner;
    },
    async replicaOwner(replica, opts) {
      enter(opts);
      const owner = replicaOf(replica.id).owner;
      return owner && structuredClone(owner);
    },
    async replicaMark(replica, opts) {
      enter(opts);
      return replicaOf(replica.id).mark;
    },
    async createRestorePoint(replica, label, opts) {
      enter(opts);
      const vm = vmOf(replica.id);
      const state = replicaOf(replica.id);
      const last = state.points.at(-1);
      if (last?.point.label === label && !state.pending) return structuredClone(last.point);
      if (state.pending) {
        for (const [id, data] of state.pending.disks) vm.disks.get(id)!.data = data;
        delete state.pending;
      }
      const point: RestorePoint = {
        id: `rp-${++counter}`,
        replicaId: replica.id,
        label,
        createdAt: new Date().toISOString(),
      };
      state.points.push({ point, disks: new Map([...vm.disks].map(([k, d]) => [k, d.data.slice()])) });
      while (opts?.retention && state.points.length > opts.retention) state.points.shift();
      return structuredClone(point);
    },
    async listRestorePoints(replica, opts) {
      enter(opts);
      return replicaOf(replica.id).points.map((p) => structuredClone(p.point));
    },
    async revertTo(replica, point, opts) {
      enter(opts);
      const vm = vmOf(replica.id);
      const state = replicaOf(replica.id);
      const at = state.points.findIndex((p) => p.point.id === point.id);
      if (at < 0) throw new NotFoundError(`no restore point '${point.id}' in replica '${replica.name}'`);
      state.points.splice(at + 1);
      for (const [id, data] of copyAll(state.points[at]!.disks)) vm.disks.get(id)!.data = data;
      delete state.pending;
      state.mark = 'ready';
    },
    async power(vmId, op, opts) {
      enter(opts);
      const vm = vmOf(vmId);
      if (op === 'start' && vm.replica?.mark === 'in-progress') {
        throw new ReplicaInProgressError(`replica '${vm.info.name}' is being written; let the run finish or revert it`);
      }
      vm.info.powerState = op === 'start' ? 'running' : 'stopped';
      if (op === 'start' && vm.replica) vm.replica.boots++;
    },
    async close() {
      closed = true;
      for (const handle of [...handedOut]) await handle.close();
    },
  };
  return driver;
}

/** The conformance fixtures of the memory driver: what `runDriverConformance` needs besides the contract. */
export const memoryFixtures: DriverConformanceFixtures = {
  createSourceVM: async (hv, spec) => (hv as MemoryDriver).addVM(spec.name, spec.disks),
  writeGuest: async (hv, vmId, diskId, offset, data) => (hv as MemoryDriver).guestWrite(vmId, diskId, offset, data),
  writeOutside: async (hv, replica, diskId, offset, data) =>
    (hv as MemoryDriver).outsideWrite(replica.id, diskId, offset, data),
};
