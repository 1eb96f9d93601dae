// An in-memory Hypervisor for the engine's unit tests: small disks held in Uint8Arrays, restore
// points as full copies, an optional change tracker that compares snapshots. It is a test double
// of the contract, not of any platform; real drivers are tested through the conformance suite.
import {
  type Capabilities,
  type ChangeTracker,
  ConflictError,
  type DiskReader,
  type DiskRef,
  type DiskWriter,
  type Extent,
  type Hypervisor,
  NotFoundError,
  type Replica,
  ReplicaInProgressError,
  type ReplicaOwner,
  type RestorePoint,
  type Snapshot,
  type VMInfo,
} from '@replikit/core';
import { checkRange } from '@replikit/core/internal';

interface MemoryVm {
  info: VMInfo;
  disks: Map<string, Uint8Array>;
  replica?: {
    mark: 'in-progress' | 'ready';
    points: Array<{ point: RestorePoint; disks: Map<string, Uint8Array> }>;
    owner?: ReplicaOwner;
  };
  boots: number;
  writes: number;
}

/** Hooks a test sets to inject failures or observe calls. */
export interface MemoryHooks {
  beforeWrite?(disk: DiskRef, offset: number, length: number): void | Promise<void>;
  reads: number;
}

export interface MemoryDriver extends Hypervisor {
  vms: Map<string, MemoryVm>;
  snapshots: Map<string, { snapshot: Snapshot; disks: Map<string, Uint8Array> }>;
  hooks: MemoryHooks;
  addVm(name: string, disks: Array<{ id: string; size: number }>): VMInfo;
}

function allocatedOf(data: Uint8Array, grain = 4096): Extent[] {
  const extents: Extent[] = [];
  for (let offset = 0; offset < data.length; offset += grain) {
    const end = Math.min(offset + grain, data.length);
    if (data.subarray(offset, end).some((b) => b !== 0)) {
      const last = extents[extents.length - 1];
      if (last && last.offset + last.length === offset) last.length += end - offset;
      else extents.push({ offset, length: end - offset });
    }
  }
  return extents;
}

export function createMemoryDriver(options: { changeTracking?: boolean } = {}): MemoryDriver {
  const vms = new Map<string, MemoryVm>();
  const snapshots = new Map<string, { snapshot: Snapshot; disks: Map<string, Uint8Array> }>();
  const hooks: MemoryHooks = { reads: 0 };
  let counter = 0;
  const capabilities: Capabilities = {
    methods: ['qhybrid'],
    canBeSource: true,
    canBeTarget: true,
    changeTracking: options.changeTracking ?? false,
    formats: ['raw'],
    restorePoints: true,
  };
  const vmOf = (id: string) => {
    const vm = vms.get(id) ?? [...vms.values()].find((v) => v.info.name === id);
    if (!vm) throw new NotFoundError(`no VM '${id}'`);
    return vm;
  };
  const dataOf = (disk: DiskRef): Uint8Array => {
    if (disk.snapshotId) {
      const snap = snapshots.get(disk.snapshotId);
      const data = snap?.disks.get(disk.id);
      if (!data) throw new NotFoundError(`no snapshot disk ${disk.snapshotId}/${disk.id}`);
      return data;
    }
    const vm = vmOf(disk.vmId);
    const data = vm.disks.get(disk.id);
    if (!data) throw new NotFoundError(`no disk ${disk.id}`);
    return data;
  };
  const copy = (disks: Map<string, Uint8Array>) => new Map([...disks].map(([k, v]) => [k, v.slice()]));

  const changeTracker: ChangeTracker = {
    async changes(disk, base, current) {
      const a = snapshots.get(base.id)?.disks.get(disk.id);
      const b = snapshots.get(current.id)?.disks.get(disk.id);
      if (!a || !b) return undefined;
      const extents: Extent[] = [];
      for (let offset = 0; offset < b.length; offset += 4096) {
        const end = Math.min(offset + 4096, b.length);
        if (!a.subarray(offset, end).every((v, i) => v === b[offset + i]))
          extents.push({ offset, length: end - offset });
      }
      return (async function* () {
        yield* extents;
      })();
    },
  };

  const driver: MemoryDriver = {
    kind: 'memory',
    capabilities,
    ...(options.changeTracking ? { changeTracker } : {}),
    vms,
    snapshots,
    hooks,
    addVm(name, disks) {
      const info: VMInfo = {
        id: name,
        name,
        cpus: 1,
        memoryMiB: 256,
        powerState: 'stopped',
        disks: disks.map((d) => ({ id: d.id, vmId: name, size: d.size })),
      };
      vms.set(name, { info, disks: new Map(disks.map((d) => [d.id, new Uint8Array(d.size)])), boots: 0, writes: 0 });
      return info;
    },
    async listVMs() {
      return [...vms.values()].map((v) => v.info);
    },
    async getVM(id) {
      return vmOf(id).info;
    },
    async snapshot(vmId, label) {
      const vm = vmOf(vmId);
      const id = `snap-${++counter}`;
      const snapshot: Snapshot = {
        id,
        vmId: vm.info.id,
        label,
        createdAt: new Date().toISOString(),
        disks: vm.info.disks.map((d) => ({ ...d, snapshotId: id })),
      };
      snapshots.set(id, { snapshot, disks: copy(vm.disks) });
      return snapshot;
    },
    async listSnapshots(vmId) {
      return [...snapshots.values()].filter((s) => s.snapshot.vmId === vmId).map((s) => s.snapshot);
    },
    async deleteSnapshot(snapshot) {
      if (!snapshots.delete(snapshot.id)) throw new NotFoundError(`no snapshot ${snapshot.id}`);
    },
    async openReader(disk): Promise<DiskReader> {
      const data = dataOf(disk);
      return {
        size: data.length,
        blockSize: 4096,
        async *allocated() {
          yield* allocatedOf(data);
        },
        async read(offset, length) {
          checkRange(data.length, offset, length, 'read');
          hooks.reads++;
          return data.slice(offset, offset + length);
        },
        async close() {},
      };
    },
    async ensureReplica(spec) {
      const existing = vms.get(spec.name);
      if (existing) {
        // The replica follows the source's shape: a grown disk grows (its bytes kept), a new one is added.
        existing.info.disks = spec.disks.map((d, i) => {
          const id = existing.info.disks[i]?.id ?? d.sourceDiskId;
          const old = existing.disks.get(id);
          if (!old || old.length < d.size) {
            const grown = new Uint8Array(d.size);
            if (old) grown.set(old);
            existing.disks.set(id, grown);
          }
          return { id, vmId: spec.name, size: Math.max(d.size, old?.length ?? 0) };
        });
        return { id: spec.name, name: spec.name, disks: existing.info.disks, created: false };
      }
      const info = driver.addVm(
        spec.name,
        spec.disks.map((d) => ({ id: d.sourceDiskId, size: d.size })),
      );
      vmOf(spec.name).replica = { mark: 'ready', points: [] };
      return { id: info.id, name: info.name, disks: info.disks, created: true };
    },
    async deleteReplica(replica) {
      vms.delete(replica.id);
    },
    async openWriter(replica: Replica, disk: DiskRef, opts): Promise<DiskWriter> {
      const vm = vmOf(replica.id);
      const owner = vm.replica?.owner;
      if (owner && owner.runId !== opts?.runId) throw new ConflictError(`replica is held by run ${owner.runId}`);
      const data = vm.disks.get(disk.id);
      if (!data) throw new NotFoundError(`no disk ${disk.id}`);
      return {
        size: data.length,
        async write(offset, bytes) {
          checkRange(data.length, offset, bytes.length, 'write');
          await hooks.beforeWrite?.(disk, offset, bytes.length);
          data.set(bytes, offset);
        },
        async writeZeroes(offset, length) {
          checkRange(data.length, offset, length, 'writeZeroes');
          await hooks.beforeWrite?.(disk, offset, length);
          data.fill(0, offset, offset + length);
        },
        async flush() {},
        async close() {},
      };
    },
    async replicaState(replica) {
      const vm = vmOf(replica.id);
      return { value: `${vm.boots}:${vm.writes}:${vm.replica?.points.length ?? 0}` };
    },
    async markReplica(replica, state) {
      vmOf(replica.id).replica!.mark = state;
    },
    async claimReplica(replica, owner) {
      const state = vmOf(replica.id).replica!;
      if (state.owner && state.owner.runId !== owner.runId) return state.owner;
      state.owner = { ...owner };
      return state.owner;
    },
    async releaseReplica(replica, runId) {
      const state = vms.get(replica.id)?.replica;
      if (state?.owner?.runId === runId) delete state.owner;
    },
    async replicaOwner(replica) {
      return vmOf(replica.id).replica!.owner;
    },
    async replicaMark(replica) {
      return vmOf(replica.id).replica!.mark;
    },
    async createRestorePoint(replica, label, opts) {
      const vm = vmOf(replica.id);
      const points = vm.replica!.points;
      const last = points[points.length - 1];
      if (last?.point.label === label) return last.point;
      const point: RestorePoint = {
        id: `rp-${++counter}`,
        replicaId: replica.id,
        label,
        createdAt: new Date().toISOString(),
      };
      points.push({ point, disks: copy(vm.disks) });
      while (opts?.retention && points.length > opts.retention) points.shift();
      return point;
    },
    async listRestorePoints(replica) {
      return vmOf(replica.id).replica!.points.map((p) => p.point);
    },
    async revertTo(replica, point) {
      const vm = vmOf(replica.id);
      const points = vm.replica!.points;
      const at = points.findIndex((p) => p.point.id === point.id);
      if (at < 0) throw new NotFoundError(`no restore point ${point.id}`);
      points.splice(at + 1);
      vm.disks = copy(points[at]!.disks);
    },
    async power(vmId, op) {
      const vm = vmOf(vmId);
      if (op === 'start' && vm.replica?.mark === 'in-progress') throw new ReplicaInProgressError('replica in progress');
      vm.info.powerState = op === 'start' ? 'running' : 'stopped';
      if (op === 'start') vm.boots++;
    },
    async close() {},
  };
  return driver;
}
