// Every run says why each disk is replicated the way it is: the reason codes produced end to end
// by the engine on the real file driver (change tracking on) with a file replication cache.
import { randomFillSync } from 'node:crypto';
import { rmSync } from 'node:fs';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  DriverRegistry,
  FileStateStore,
  type JobSpecInput,
  type PlanEvent,
  ReplicationEngine,
  type RunRecord,
} from '@replikit/core';
import { createFileDriver, createFileVM, fileDriver, writeGuestDisk } from '@replikit/driver-file';
import { localTransport } from '@replikit/transport';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createHashingPool, FileCacheProvider } from '../src/index.js';

const MiB = 1024 * 1024;
let dir: string;
let engine: ReplicationEngine;
let warnings: Array<{ code: string; message: string }>;
let plans: PlanEvent[];
let job: JobSpecInput;

const vms = () => join(dir, 'vms');
const reasons = (run: RunRecord) => run.disks.map((d) => d.reason?.code);
const modes = (run: RunRecord) => run.disks.map((d) => d.mode);
const guestWrite = (disk: string, offset: number) =>
  writeGuestDisk(vms(), 'web', disk, offset, randomFillSync(new Uint8Array(4096)));

/** Writes the source image straight, as QEMU writing the raw file would: no change tracking sees it. */
async function writeOutside(file: string, offset: number): Promise<void> {
  const handle = await open(join(vms(), 'web', file), 'r+');
  await handle.write(randomFillSync(new Uint8Array(4096)), 0, 4096, offset);
  await handle.close();
}

async function equalToSource(): Promise<boolean> {
  const source = createFileDriver({ root: vms() });
  const target = createFileDriver({ root: join(dir, 'replicas') });
  const [a, b] = [await source.getVM('web'), await target.getVM('web-replica')];
  for (const [i, disk] of a.disks.entries()) {
    const [ra, rb] = [await source.openReader(disk), await target.openReader(b.disks[i]!)];
    const [da, db] = [await ra.read(0, disk.size), await rb.read(0, disk.size)];
    await Promise.all([ra.close(), rb.close()]);
    if (!Buffer.from(da).equals(Buffer.from(db))) return false;
  }
  return true;
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'replikit-reasons-'));
  warnings = [];
  plans = [];
  await createFileVM(vms(), {
    name: 'web',
    disks: [
      { id: 'system', size: 4 * MiB },
      { id: 'data', size: 2 * MiB },
    ],
    changeTracking: true,
  });
  await writeGuestDisk(vms(), 'web', 'system', 0, randomFillSync(new Uint8Array(2 * MiB)));
  await writeGuestDisk(vms(), 'web', 'data', MiB, randomFillSync(new Uint8Array(MiB)));
  job = {
    name: 'reasons',
    source: { driver: 'file', root: vms(), vm: 'web' },
    target: { driver: 'file', root: join(dir, 'replicas') },
    method: 'qhybrid',
    blockSize: 65536,
    options: { replicationCache: true },
  };
  const drivers = new DriverRegistry().register(fileDriver);
  engine = new ReplicationEngine({
    transport: localTransport(),
    stateStore: new FileStateStore(join(dir, 'state')),
    drivers,
    digest: 'xxh128',
    hasher: (algorithm) => createHashingPool({ algorithm, threads: 1 }),
    cache: new FileCacheProvider(join(dir, 'state', 'cache')),
  });
  engine.on('warning', (w) => warnings.push({ code: w.code, message: w.message }));
  engine.on('plan', (p) => plans.push(p));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('reason codes, end to end on the file driver', () => {
  it('FIRST_SEED, then TRACKED; the plan event and the journal carry the same reasons', async () => {
    const first = await engine.run(job);
    expect(reasons(first)).toEqual(['FIRST_SEED', 'FIRST_SEED']);
    await guestWrite('system', 3 * MiB);
    const second = await engine.run(job);
    expect(reasons(second)).toEqual(['TRACKED', 'TRACKED']);
    expect(modes(second)).toEqual(['tracked', 'tracked']);
    expect(plans.map((p) => p.disks.map((d) => d.reason.code))).toEqual([reasons(first), reasons(second)]);
    const journaled = await engine.store.loadRun(second.runId);
    expect(journaled?.disks.map((d) => d.reason?.code)).toEqual(['TRACKED', 'TRACKED']);
    expect(warnings.map((w) => w.code)).not.toContain('W_RUN_MORE_EXPENSIVE');
    expect(await equalToSource()).toBe(true);
  });

  it('a booted replica: REPLICA_MODIFIED (booted), with a W_RUN_MORE_EXPENSIVE warning', async () => {
    await engine.run(job);
    await engine.run(job);
    const target = createFileDriver({ root: join(dir, 'replicas') });
    await target.power('web-replica', 'start');
    await target.power('web-replica', 'shutdown');
    const run = await engine.run(job);
    expect(reasons(run)).toEqual(['REPLICA_MODIFIED', 'REPLICA_MODIFIED']);
    expect(run.disks[0]!.reason!.evidence).toEqual({ change: 'booted' });
    expect(modes(run)).toEqual(['hash-diff', 'hash-diff']);
    expect(warnings.filter((w) => w.code === 'W_RUN_MORE_EXPENSIVE')).toHaveLength(2);
    expect(await equalToSource()).toBe(true);
  });

  it('a source image written outside replikit: TRACKING_RESET for that disk only, then TRACKED again', async () => {
    await engine.run(job);
    await guestWrite('system', 0);
    await engine.run(job);
    await writeOutside('system.raw', MiB);
    await guestWrite('data', 0);
    const run = await engine.run(job);
    expect(reasons(run)).toEqual(['TRACKING_RESET', 'TRACKED']);
    expect(run.disks[0]).toMatchObject({ mode: 'hash-diff', digestSource: 'cache' });
    const warned = warnings.filter((w) => w.code === 'W_RUN_MORE_EXPENSIVE');
    expect(warned).toHaveLength(1);
    expect(warned[0]!.message).toContain("disk 'system'");
    expect(warned[0]!.message).toContain('TRACKING_RESET');
    expect(await equalToSource()).toBe(true);
    await guestWrite('system', 0);
    expect(reasons(await engine.run(job))).toEqual(['TRACKED', 'TRACKED']);
  });

  it('a deleted cache: CACHE_MISSING; a damaged one: CACHE_INVALID', async () => {
    await engine.run(job);
    await engine.run(job);
    await rm(join(dir, 'state', 'cache', 'reasons', 'system.rkc'));
    await writeFile(join(dir, 'state', 'cache', 'reasons', 'data.rkc'), 'garbage');
    const run = await engine.run(job);
    expect(reasons(run)).toEqual(['CACHE_MISSING', 'CACHE_INVALID']);
    expect(run.disks.map((d) => d.digestSource)).toEqual(['replica', 'replica']);
    expect(run.stats.bytesReadReplica).toBeGreaterThan(0);
    expect(warnings.filter((w) => w.code === 'W_RUN_MORE_EXPENSIVE')).toHaveLength(2);
    expect(await equalToSource()).toBe(true);
  });

  it('--full: FORCED on every disk, every block read', async () => {
    await engine.run(job);
    const run = await engine.run(job, { full: true });
    expect(reasons(run)).toEqual(['FORCED', 'FORCED']);
    expect(modes(run)).toEqual(['full', 'full']);
    expect(run.stats.bytesScanned).toBe(6 * MiB);
    expect(warnings.map((w) => w.code)).not.toContain('W_RUN_MORE_EXPENSIVE');
  });

  it('a cache lost between planning and transfer: the disk is planned again and the journal says so', async () => {
    await engine.run(job);
    await guestWrite('system', 0);
    engine.once('plan', () => {
      // Lost after the plan was journaled, before the transfer opens it.
      rmSync(join(dir, 'state', 'cache', 'reasons', 'system.rkc'));
    });
    const transfers: string[] = [];
    engine.on('state', (s) => {
      if (s.to === 'transfer') transfers.push(s.runId);
    });
    const run = await engine.run(job);
    expect(transfers).toHaveLength(1);
    expect(run.disks[0]).toMatchObject({ mode: 'hash-diff', digestSource: 'replica' });
    expect(run.disks[0]!.reason!.code).toBe('CACHE_MISSING');
    const journaled = await engine.store.loadRun(run.runId);
    expect(journaled?.disks[0]).toMatchObject({ mode: 'hash-diff', reason: { code: 'CACHE_MISSING' } });
    expect(plans.at(-1)!.disks.map((d) => d.reason.code)).toEqual(['CACHE_MISSING']);
    expect(await equalToSource()).toBe(true);
  });
});
