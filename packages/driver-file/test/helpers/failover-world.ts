import { createHash } from 'node:crypto';
import { join } from 'node:path';
import {
  DriverRegistry,
  defineDriver,
  FailoverEngine,
  type FailoverFaultHook,
  FileFailoverStore,
  FileStateStore,
  type Hypervisor,
  type JobSpecInput,
  parseJob,
  ReplicationEngine,
} from '@replikit/core';
import { localTransport } from '@replikit/transport';
import {
  createFileDriver,
  createFileVM,
  type FaultPoint,
  FILE_DRIVER_CAPABILITIES,
  fileDriverOptionsSchema,
  openGuestDisk,
} from '../../src/index.js';

const MiB = 1024 * 1024;

/** Paths of a failover test world under `dir`: a source VM `web` (2 tracked disks), a replica root, a state folder. */
export function worldPaths(dir: string) {
  return { vms: join(dir, 'vms'), replicas: join(dir, 'replicas'), state: join(dir, 'state') };
}

/** The job of the world. */
export function worldJob(dir: string, options: { retention?: number } = {}) {
  const { vms, replicas } = worldPaths(dir);
  const input: JobSpecInput = {
    name: 'web-dr',
    source: { driver: 'file', root: vms, vm: 'web', reflink: false },
    target: { driver: 'file', root: replicas, reflink: false },
    method: 'qhybrid',
    ...(options.retention === undefined ? {} : { options: { retention: options.retention } }),
  } as JobSpecInput;
  return parseJob(input, 'job');
}

/** Drivers of kind `file` whose every instance calls `hook` at the driver's fault points. */
export function fileRegistry(hook?: (point: FaultPoint) => void | Promise<void>): DriverRegistry {
  return new DriverRegistry().register(
    defineDriver({
      kind: 'file',
      capabilities: FILE_DRIVER_CAPABILITIES,
      options: fileDriverOptionsSchema,
      create: (options) => createFileDriver({ ...options, ...(hook ? { faultHook: hook } : {}) }),
    }),
  );
}

/** The engines of a world. */
export function worldEngines(
  dir: string,
  hooks: { driver?: (point: FaultPoint) => void | Promise<void>; failover?: FailoverFaultHook } = {},
) {
  const { state } = worldPaths(dir);
  const drivers = fileRegistry(hooks.driver);
  const stateStore = new FileStateStore(state);
  const replication = new ReplicationEngine({ transport: localTransport(), stateStore, drivers });
  const failover = new FailoverEngine({
    stateStore,
    failoverStore: new FileFailoverStore(state),
    drivers,
    replication,
    ...(hooks.failover ? { faultHook: hooks.failover } : {}),
  });
  return { replication, failover, stateStore };
}

/** Writes guest data into the source VM `web` (both disks), as its running guest would. */
export async function guestWrite(dir: string, seed: number, vm = 'web', root = worldPaths(dir).vms): Promise<void> {
  for (const diskId of ['d0', 'd1']) {
    const disk = await openGuestDisk(root, vm, diskId);
    try {
      for (const offset of [seed * 65_536, 700_000 + seed * 4099])
        await disk.write(offset, pattern(seed * 7 + offset, 5000));
    } finally {
      await disk.close();
    }
  }
}

/** Creates the source VM `web` (running) with data, and replicates it once; `sizesMiB` sizes its two disks (2 and 1 MiB). */
export async function createWorld(dir: string, sizesMiB: [number, number] = [2, 1]): Promise<void> {
  const { vms } = worldPaths(dir);
  await createFileVM(vms, {
    name: 'web',
    disks: [
      { id: 'd0', size: sizesMiB[0] * MiB },
      { id: 'd1', size: sizesMiB[1] * MiB },
    ],
    changeTracking: true,
  });
  await createFileDriver({ root: vms }).power('web', 'start');
  await guestWrite(dir, 1);
  const { replication } = worldEngines(dir);
  await replication.run(worldJob(dir));
  await replication.close();
}

/** Deterministic bytes (no vitest import: the crash child loads this file). */
function pattern(seed: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** sha256 of every disk of a VM (its live images; a replica reads as its last restore point). */
export async function vmDigest(hv: Hypervisor, vmId: string): Promise<string> {
  const hash = createHash('sha256');
  for (const disk of (await hv.getVM(vmId)).disks) {
    const reader = await hv.openReader(disk);
    try {
      for (let offset = 0; offset < disk.size; offset += MiB) {
        hash.update(await reader.read(offset, Math.min(MiB, disk.size - offset)));
      }
    } finally {
      await reader.close();
    }
  }
  return hash.digest('hex');
}
