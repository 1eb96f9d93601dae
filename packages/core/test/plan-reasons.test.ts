// The reason codes the file driver cannot produce (it has no XVA method, cannot resize a replica,
// always tracks or never), end to end through the engine with the in-memory test driver.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { localTransport } from '@replikit/transport';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DriverRegistry, FileStateStore, type JobSpecInput, ReplicationEngine, type RunRecord } from '../src/index.js';
import { instanceDriver } from './helpers/instance-driver.js';
import { createMemoryDriver, type MemoryDriver } from './helpers/memory-driver.js';
import { attachPullHooks } from './helpers/pull-hooks.js';
import { attachWholeVmHooks } from './helpers/whole-vm-hooks.js';

const MiB = 1024 * 1024;
let dir: string;
let source: MemoryDriver;
let target: MemoryDriver;

function job(overrides: Partial<JobSpecInput> = {}): JobSpecInput {
  return {
    name: 'why',
    source: { driver: 'memsrc', vm: 'vm1' },
    target: { driver: 'memdst' },
    method: 'qhybrid',
    blockSize: 65536,
    ...overrides,
  };
}

function engine(tracking = true): ReplicationEngine {
  source = createMemoryDriver({ changeTracking: tracking });
  const vm = source.addVm('vm1', [{ id: 'a', size: 2 * MiB }]);
  source.vms.get(vm.id)!.disks.get('a')!.fill(7, 0, MiB);
  const registry = new DriverRegistry()
    .register(instanceDriver('memsrc', () => source))
    .register(instanceDriver('memdst', () => target));
  return new ReplicationEngine({
    transport: localTransport(),
    stateStore: new FileStateStore(join(dir, 'state')),
    drivers: registry,
    ruleSets: [],
  });
}

const reasons = (run: RunRecord) => run.disks.map((d) => d.reason?.code);

function replicaEqualsSource(): boolean {
  const src = source.vms.get('vm1')!;
  const dst = target.vms.get('vm1-replica')!;
  return [...src.disks].every(([id, data]) => Buffer.compare(data, dst.disks.get(id)!) === 0);
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'replikit-reasons-'));
  target = createMemoryDriver();
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('reason codes, end to end on the memory driver', () => {
  it('TRACKING_UNAVAILABLE: a source without a change tracker', async () => {
    const e = engine(false);
    expect(reasons(await e.run(job()))).toEqual(['FIRST_SEED']);
    const run = await e.run(job());
    expect(reasons(run)).toEqual(['TRACKING_UNAVAILABLE']);
    expect(run.disks[0]).toMatchObject({ mode: 'hash-diff', digestSource: 'replica' });
  });

  it('METHOD_ALWAYS_FULL: an xva job reads the whole VM every run', async () => {
    const e = engine();
    // A whole-VM method moves the VM through exportVm/importVm, never block by block.
    attachWholeVmHooks(source, target);
    await e.run(job({ method: 'xva' }));
    const run = await e.run(job({ method: 'xva' }));
    expect(reasons(run)).toEqual(['METHOD_ALWAYS_FULL']);
    expect(run.disks[0]!.mode).toBe('full');
    expect(replicaEqualsSource()).toBe(true);
  });

  it('PULL_IGNORES_CACHE: a pull job asking for a cache, with no tracker to help', async () => {
    const e = engine(false);
    // A pull job runs through the drivers' pull hooks (the target brings each disk itself).
    attachPullHooks(source, target);
    const pull = job({ options: { direction: 'pull', replicationCache: true } });
    await e.run(pull);
    const run = await e.run(pull);
    expect(reasons(run)).toEqual(['PULL_IGNORES_CACHE']);
    expect(run.disks[0]).toMatchObject({ mode: 'hash-diff', digestSource: 'replica' });
    expect(replicaEqualsSource()).toBe(true);
  });

  it('DISK_RESIZED: a grown disk is compared in full, and the replica equals the grown source', async () => {
    const e = engine();
    await e.run(job());
    const vm = source.vms.get('vm1')!;
    const grown = new Uint8Array(3 * MiB);
    grown.set(vm.disks.get('a')!);
    grown.fill(9, 2 * MiB + 100, 3 * MiB - 5);
    vm.disks.set('a', grown);
    vm.info.disks = [{ id: 'a', vmId: 'vm1', size: 3 * MiB }];
    const run = await e.run(job());
    expect(reasons(run)).toEqual(['DISK_RESIZED']);
    expect(run.disks[0]!.reason!.evidence).toEqual({ baseSize: 2 * MiB, size: 3 * MiB });
    expect(run.disks[0]!.mode).toBe('hash-diff');
    expect(replicaEqualsSource()).toBe(true);
  });

  it('DISK_SET_CHANGED: an added disk is compared in full, the others stay tracked', async () => {
    const e = engine();
    await e.run(job());
    const vm = source.vms.get('vm1')!;
    const added = new Uint8Array(MiB).fill(3, 4096, 8192);
    vm.disks.set('b', added);
    vm.info.disks = [...vm.info.disks, { id: 'b', vmId: 'vm1', size: MiB }];
    const run = await e.run(job());
    expect(reasons(run)).toEqual(['TRACKED', 'DISK_SET_CHANGED']);
    expect(replicaEqualsSource()).toBe(true);
  });

  it('BASE_SNAPSHOT_MISSING: the job record lost its base snapshot', async () => {
    const e = engine();
    await e.run(job());
    const { baseSnapshot: _lost, ...record } = (await e.store.loadJob('why'))!;
    await e.store.saveJob(record);
    const run = await e.run(job());
    expect(reasons(run)).toEqual(['BASE_SNAPSHOT_MISSING']);
    expect(run.disks[0]!.mode).toBe('full');
    expect(replicaEqualsSource()).toBe(true);
  });
});
