// engine.plan(job) on the in-memory test driver: blockers, estimates labelled as such, retention.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { localTransport } from '@replikit/transport';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DriverRegistry, FileStateStore, type JobSpecInput, ReplicationEngine } from '../src/index.js';
import { instanceDriver } from './helpers/instance-driver.js';
import { createMemoryDriver, type MemoryDriver } from './helpers/memory-driver.js';

const MiB = 1024 * 1024;
let dir: string;
let source: MemoryDriver;
let target: MemoryDriver;
let engine: ReplicationEngine;

const job = (extra: Partial<JobSpecInput> = {}): JobSpecInput => ({
  name: 'next',
  source: { driver: 'memsrc', vm: 'vm1' },
  target: { driver: 'memdst' },
  method: 'qhybrid',
  blockSize: 65536,
  ...extra,
});

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'replikit-forecast-'));
  source = createMemoryDriver({ changeTracking: true });
  target = createMemoryDriver();
  source.addVm('vm1', [{ id: 'a', size: 2 * MiB }]);
  source.vms.get('vm1')!.disks.get('a')!.fill(5, 0, MiB);
  const drivers = new DriverRegistry()
    .register(instanceDriver('memsrc', () => source))
    .register(instanceDriver('memdst', () => target));
  engine = new ReplicationEngine({
    transport: localTransport(),
    stateStore: new FileStateStore(join(dir, 'state')),
    drivers,
  });
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('engine.plan', () => {
  it('without a pending record from the tracker, estimates from past tracked runs and says so', async () => {
    await engine.run(job());
    const disk = source.vms.get('vm1')!.disks.get('a')!;
    disk.fill(6, 0, 4096);
    disk.fill(6, 10 * 65536, 10 * 65536 + 10);
    const tracked = await engine.run(job());
    expect(tracked.disks[0]!.mode).toBe('tracked');
    const forecast = await engine.plan(job());
    expect(forecast.canRun).toBe(true);
    expect(forecast.disks[0]).toMatchObject({ mode: 'tracked', basis: 'estimate', blocksToRead: 2 });
    expect(forecast.throughput?.runs).toBeGreaterThanOrEqual(1);
  });

  it('a first run with blocks bigger than a disk estimates no more to send than the disk holds', async () => {
    source.addVm('small', [{ id: 'b', size: MiB + 512 }]);
    const forecast = await engine.plan(job({ source: { driver: 'memsrc', vm: 'small' }, blockSize: 16 * MiB }));
    expect(forecast.disks[0]).toMatchObject({ mode: 'full', blocksToRead: 1, bytesToRead: MiB + 512 });
    expect(forecast.disks[0]!.bytesToSend).toBe(MiB + 512);
    expect(forecast.bytesToSend).toBe(MiB + 512);
  });

  it('names what would stop the run: a broken rule, an unfinished run', async () => {
    const broken = await engine.plan(job({ method: 'xva' }));
    expect(broken.canRun).toBe(false);
    expect(broken.blockers.map((b) => b.code)).toContain('RULE_BROKEN');

    await engine.run(job());
    const [done] = await engine.store.listRuns();
    await engine.store.saveRun({ ...done!, runId: 'next-unfinished', state: 'transfer', pid: 2 ** 22 + 1 });
    const blocked = await engine.plan(job());
    expect(blocked.canRun).toBe(false);
    expect(blocked.blockers).toEqual([expect.objectContaining({ code: 'RUN_UNFINISHED' })]);
  });

  it('says which restore points retention would prune', async () => {
    await engine.run(job({ options: { retention: 2 } }));
    await engine.run(job({ options: { retention: 2 } }));
    const points = await target.listRestorePoints((await engine.store.loadJob('next'))!.replica!);
    expect(points).toHaveLength(2);
    const forecast = await engine.plan(job({ options: { retention: 2 } }));
    expect(forecast.restorePoints).toEqual({ create: 1, prune: [points[0]!.id] });
  });
});
