import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type DiskRef,
  DriverRegistry,
  FailoverEngine,
  FileFailoverStore,
  FileStateStore,
  type Hypervisor,
  isReplikitError,
  type JobSpec,
  parseJob,
  ReplicationEngine,
  type RestorePoint,
} from '@replikit/core';
import { compareBytes, readWholeDisk, testPattern } from '@replikit/core/testing';
import { localTransport } from '@replikit/transport';
import { afterEach, describe, expect, it } from 'vitest';
import { xenDriver } from '../src/index.js';
import { PASSWORD_ENV, startPool, type TestPool } from './helpers/xen-pool.js';

const MiB = 1024 * 1024;

/** sha256 of every disk of a VM, read through the driver. */
async function vmDigest(hv: Hypervisor, vmId: string): Promise<string> {
  return disksDigest(hv, (await hv.getVM(vmId)).disks);
}

/** sha256 of `disks`, in order. */
async function disksDigest(hv: Hypervisor, disks: readonly DiskRef[]): Promise<string> {
  const hash = createHash('sha256');
  for (const disk of disks) hash.update(await readWholeDisk(hv, disk));
  return hash.digest('hex');
}

const ids = (points: RestorePoint[]) => points.map((p) => p.id);

// The FailoverEngine's operations xen ► xen on the simulator: a source VM `web` with two disks,
// replicated once into a xen replica, then test, planned and unplanned failover, undo, commit
// and permanent. The kind's rules (xen-target-needs-abd) are left out, as in xen-target-engine.
describe('failover engine xen ► xen', () => {
  let pool: TestPool | undefined;
  let dir: string | undefined;
  const closers: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close();
    await pool?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  async function world() {
    pool = await startPool();
    dir = await mkdtemp(join(tmpdir(), 'rk-xen-failover-'));
    const vm = await pool.makeVM('web', [4 * MiB, MiB]);
    const xen = await pool.driver();
    closers.push(() => xen.close());
    const disks = (await xen.getVM(vm.uuid)).disks;
    const endpoint = { driver: 'xen', url: pool.sim.url, passwordEnv: PASSWORD_ENV };
    const job: JobSpec = parseJob({
      name: 'web-dr',
      source: { ...endpoint, vm: 'web' },
      target: { ...endpoint, replicaName: 'web-dr' },
      method: 'cbt',
    });
    const drivers = new DriverRegistry().register(xenDriver);
    const stateStore = new FileStateStore(join(dir, 'state'));
    const replication = new ReplicationEngine({ stateStore, drivers, ruleSets: [], transport: localTransport() });
    closers.push(() => replication.close());
    const failover = new FailoverEngine({
      stateStore,
      failoverStore: new FileFailoverStore(join(dir, 'state')),
      drivers,
      replication,
    });
    const p = pool;
    /** The source's guest writes a few blocks on both disks. */
    const guestWrite = async (seed: number) => {
      for (const [i, disk] of disks.entries()) {
        await p.writeGuest(vm.uuid, disk.id, (seed * 65_536 * (i + 1)) % (disk.size - 5000), testPattern(seed, 5000));
      }
    };
    await guestWrite(1);
    const first = await replication.run(job);
    expect(first.outcome, JSON.stringify(first.error)).toBe('completed');
    const replica = first.replica!;
    return { xen, vm, job, replication, failover, stateStore, replica, guestWrite };
  }

  it('test failover: the clone holds the point and runs, a run during it completes, the clone is gone after, the points are untouched', async () => {
    const w = await world();
    const pointsBefore = await w.xen.listRestorePoints(w.replica);
    const pointDigest = await vmDigest(w.xen, w.replica.id);
    let runDuring: string | undefined;
    const result = await w.failover.test(w.job, {
      command: [process.execPath, '-e', 'process.exit(process.env.REPLIKIT_CLONE_ID ? 0 : 3)'],
      check: async (clone, hv) => {
        expect((await hv.getVM(clone.id)).powerState).toBe('running');
        expect(clone.networks).toEqual([]);
        expect(await vmDigest(hv, clone.id)).toBe(pointDigest);
        await w.guestWrite(2);
        const run = await w.replication.run(w.job);
        expect(run.outcome, JSON.stringify(run.error)).toBe('completed');
        runDuring = run.runId;
      },
    });
    expect(result.verdict).toMatchObject({ passed: true, started: true });
    expect(result.point.id).toBe(pointsBefore.at(-1)!.id);
    await expect(w.xen.getVM(result.clone.id)).rejects.toMatchObject({ code: 'E_NOT_FOUND' });
    expect(await w.xen.listClones!()).toEqual([]);
    const after = await w.xen.listRestorePoints(w.replica);
    expect(ids(after).slice(0, pointsBefore.length)).toEqual(ids(pointsBefore));
    expect(after.map((p) => p.label)).toContain(runDuring);
  });

  it('planned failover: every byte written before the shutdown is on the promoted replica; the source is stopped; the replica runs', async () => {
    const w = await world();
    await w.guestWrite(3); // after the last run, while the source runs
    const result = await w.failover.planned(w.job, { shutdownTimeoutMs: 60_000 });
    expect(result.forced).toBe(false);
    expect((await w.xen.getVM(w.vm.uuid)).powerState).toBe('stopped');
    expect((await w.xen.getVM(w.replica.id)).powerState).toBe('running');
    // The source's disks, read through a snapshot of the stopped source (xen reads snapshot disks).
    const check = await w.xen.snapshot(w.vm.uuid, 'after-shutdown');
    expect(await vmDigest(w.xen, w.replica.id)).toBe(await disksDigest(w.xen, check.disks));
    expect(await w.xen.failoverMark!(w.replica)).toEqual({ state: 'promoted', pointId: result.point.id });
    await expect(w.replication.run(w.job)).rejects.toMatchObject({ code: 'E_FAILED_OVER' });
  });

  it('unplanned failover: refused while the source runs unless forced; undo returns the replica to the point byte for byte and the next run is incremental', async () => {
    const w = await world();
    await expect(w.failover.unplanned(w.job)).rejects.toMatchObject({ code: 'E_SPLIT_BRAIN' });
    const before = await Promise.all(w.replica.disks.map((d) => readWholeDisk(w.xen, d)));
    const points = await w.xen.listRestorePoints(w.replica);
    await w.failover.unplanned(w.job, { force: true });
    expect((await w.xen.getVM(w.replica.id)).powerState).toBe('running');
    // The failed-over VM's guest writes on its first disk.
    const live = (await w.xen.getVM(w.replica.id)).disks;
    const vdi = await pool!.call<string>('VDI.get_uuid', await liveVdi(pool!, w.replica.id, '0'));
    await pool!.writeGuest(w.replica.id, vdi, 8192, new Uint8Array(70_000).fill(0xee));
    expect(compareBytes(await readWholeDisk(w.xen, live[0]!), before[0]!)).not.toBe('equal');

    await w.failover.undo(w.job);
    expect((await w.failover.status(w.job)).state).toBe('ready');
    expect((await w.xen.getVM(w.replica.id)).powerState).toBe('stopped');
    for (const [i, disk] of w.replica.disks.entries()) {
      expect(compareBytes(await readWholeDisk(w.xen, disk), before[i]!)).toBe('equal');
    }
    expect(ids(await w.xen.listRestorePoints(w.replica))).toEqual(ids(points));
    const ref = await pool!.call<string>('VM.get_by_uuid', w.replica.id);
    await expect(pool!.call('VM.start', ref, false, false)).rejects.toMatchObject({ xapiCode: 'OPERATION_BLOCKED' });

    await w.guestWrite(4);
    const next = await w.replication.run(w.job);
    expect(next.outcome, JSON.stringify(next.error)).toBe('completed');
    expect(next.disks.map((d) => d.mode)).toEqual(['tracked', 'tracked']);
    expect(next.warnings.map((x) => x.code)).not.toContain('W_REPLICA_MODIFIED');
    expect(await vmDigest(w.xen, w.replica.id)).toBe(await disksDigest(w.xen, next.snapshot!.disks));
  });

  it('unplanned failover to an older point, commit (no undo after), permanent (the job is retired, the VM runs on)', async () => {
    const w = await world();
    const older = await readWholeDisk(w.xen, w.replica.disks[0]!);
    const [first] = await w.xen.listRestorePoints(w.replica);
    await w.guestWrite(5);
    expect((await w.replication.run(w.job)).outcome).toBe('completed');
    expect(await w.xen.listRestorePoints(w.replica)).toHaveLength(2);
    await w.xen.power(w.vm.uuid, 'shutdown');

    await w.failover.unplanned(w.job, { pointId: first!.id });
    expect(compareBytes(await readWholeDisk(w.xen, w.replica.disks[0]!), older)).toBe('equal');
    await w.failover.commit(w.job);
    await expect(w.failover.undo(w.job)).rejects.toMatchObject({ code: 'E_FAILED_OVER' });
    expect(await w.xen.failoverMark!(w.replica)).toEqual({ state: 'committed', pointId: first!.id });
    await w.failover.permanent(w.job);
    expect((await w.failover.status(w.job)).state).toBe('retired');
    const refused = await w.replication.run(w.job).catch((error: unknown) => error);
    expect(isReplikitError(refused, 'E_FAILED_OVER')).toBe(true);
    expect((await w.xen.getVM(w.replica.id)).powerState).toBe('running');
  });
});

/** The ref of the VDI at `userdevice` of VM `vmUuid`. */
async function liveVdi(pool: TestPool, vmUuid: string, userdevice: string): Promise<string> {
  const vm = await pool.call<string>('VM.get_by_uuid', vmUuid);
  for (const vbd of await pool.call<string[]>('VM.get_VBDs', vm)) {
    if ((await pool.call('VBD.get_userdevice', vbd)) === userdevice) return pool.call<string>('VBD.get_VDI', vbd);
  }
  throw new Error(`no disk at ${userdevice}`);
}
