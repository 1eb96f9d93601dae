import { createHash } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  DriverRegistry,
  defineDriver,
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
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HYPERV_KIND_CAPABILITIES, HyperVDriver, hypervDriverOptionsSchema } from '../src/index.js';
import { type SimHost, startSimHost } from './helpers/sim-host.js';

const MiB = 2 ** 20;
const ids = (points: RestorePoint[]) => points.map((p) => p.id);

/** sha256 of every disk of a VM as it is now (its live chain, through `openLiveDisk`). */
async function liveDigest(hv: Hypervisor, vmId: string): Promise<string> {
  const hash = createHash('sha256');
  for (const disk of (await hv.getVM(vmId)).disks) {
    const live = await hv.openLiveDisk!(vmId, disk.id, 'read');
    try {
      for (let at = 0; at < live.size; at += MiB) hash.update(await live.read(at, Math.min(MiB, live.size - at)));
    } finally {
      await live.close();
    }
  }
  return hash.digest('hex');
}

/** sha256 of a replica's disks at its newest restore point (what the driver's reader reads). */
async function pointDigest(hv: Hypervisor, replicaId: string, disks: readonly { id: string; size: number }[]) {
  const hash = createHash('sha256');
  for (const d of disks) hash.update(await readWholeDisk(hv, { id: d.id, vmId: replicaId, size: d.size }));
  return hash.digest('hex');
}

// The FailoverEngine's operations hyperv ► hyperv on the simulated Hyper-V host (one fake pwsh for
// the file; each test has its own source VM, replica and state): test, planned and unplanned
// failover, undo, commit, permanent, and reverse replication with failback.
describe('failover engine hyperv ► hyperv on the simulated host', { timeout: 300_000 }, () => {
  let sim: SimHost;
  let dir: string;
  beforeAll(async () => {
    sim = await startSimHost();
    dir = await mkdtemp(join(tmpdir(), 'rk-hyperv-failover-'));
  }, 120_000);
  afterAll(async () => {
    await sim?.close();
    await rm(dir, { recursive: true, force: true });
  });

  let serial = 0;
  async function world() {
    const name = `web-${++serial}`;
    await sim.makeVM(name, [4 * MiB, MiB]);
    await sim.addNic(name, 'lan', 'LAN');
    const hv = sim.sharedDriver();
    const drivers = new DriverRegistry().register(
      defineDriver({
        kind: 'hyperv',
        capabilities: HYPERV_KIND_CAPABILITIES,
        options: hypervDriverOptionsSchema,
        create: (options) =>
          new HyperVDriver({
            link: sim.link,
            sharedLink: true,
            rct: options.rct,
            target: { replicaPath: options.replicaPath, networkMap: options.networkMap, onWarning: () => undefined },
          }),
      }),
    );
    const replicaPath = join(sim.host.root, 'replicas');
    const job: JobSpec = parseJob({
      name: `${name}-dr`,
      source: { driver: 'hyperv', vm: name },
      target: { driver: 'hyperv', replicaPath, networkMap: { LAN: 'Replica LAN' }, replicaName: `${name}-dr` },
      method: 'cbt',
    });
    const state = join(dir, name);
    const stateStore = new FileStateStore(state);
    const replication = new ReplicationEngine({ stateStore, drivers, ruleSets: [], transport: localTransport() });
    const failover = new FailoverEngine({
      stateStore,
      failoverStore: new FileFailoverStore(state),
      drivers,
      replication,
    });
    const guestWrite = async (seed: number) => {
      await sim.host.guestWrite(name, 0, (seed * 65_536) % (3 * MiB), testPattern(seed, 5000));
      await sim.host.guestWrite(name, 1, (seed * 4096) % (MiB / 2), testPattern(seed + 100, 3000));
    };
    await hv.power(name, 'start');
    await guestWrite(1);
    const first = await replication.run(job);
    expect(first.outcome, JSON.stringify(first.error)).toBe('completed');
    const replica = first.replica!;
    const replicaName = (await hv.getVM(replica.id)).name;
    const vmId = (await hv.getVM(name)).id;
    return { hv, name, vmId, job, replication, failover, stateStore, replica, replicaName, replicaPath, guestWrite };
  }

  it('test failover: the clone holds the point and runs, a run during it completes, the clone and its files are gone after, the points are untouched', async () => {
    const w = await world();
    const pointsBefore = await w.hv.listRestorePoints(w.replica);
    const atPoint = await pointDigest(w.hv, w.replica.id, w.replica.disks);
    const foldersBefore = await readdir(w.replicaPath);
    let runDuring: string | undefined;
    const result = await w.failover.test(w.job, {
      network: { mode: 'mapped', map: { 'Replica LAN': 'Test LAN' } },
      command: [process.execPath, '-e', 'process.exit(process.env.REPLIKIT_CLONE_ID ? 0 : 3)'],
      check: async (clone, hv) => {
        expect((await hv.getVM(clone.id)).powerState).toBe('running');
        expect(clone.networks).toEqual(['Test LAN']);
        expect(await liveDigest(hv, clone.id)).toBe(atPoint);
        await w.guestWrite(2);
        const run = await w.replication.run(w.job);
        expect(run.outcome, JSON.stringify(run.error)).toBe('completed');
        runDuring = run.runId;
      },
    });
    expect(result.verdict).toMatchObject({ passed: true, started: true });
    expect(result.point.id).toBe(pointsBefore.at(-1)!.id);
    await expect(w.hv.getVM(result.clone.id)).rejects.toMatchObject({ code: 'E_NOT_FOUND' });
    expect(await w.hv.listClones!()).toEqual([]);
    expect((await readdir(w.replicaPath)).sort()).toEqual(foldersBefore.sort());
    const after = await w.hv.listRestorePoints(w.replica);
    expect(ids(after).slice(0, pointsBefore.length)).toEqual(ids(pointsBefore));
    expect(after.map((p) => p.label)).toContain(runDuring);
  });

  it('planned failover: every byte written before the shutdown is on the promoted replica; the source is stopped; the replica runs', async () => {
    const w = await world();
    await w.guestWrite(3); // after the last run, while the source runs
    const result = await w.failover.planned(w.job, { shutdownTimeoutMs: 60_000 });
    expect(result.forced).toBe(false);
    // The source was asked to shut down through its guest, not turned off.
    const sent = (await sim.host.scriptLog()).filter((e) => e.kind === 'script').map((e) => e.text);
    expect(sent.some((text) => text.includes('Stop-VM -Name $p.vm -Force'))).toBe(true);
    expect((await w.hv.getVM(w.name)).powerState).toBe('stopped');
    expect((await w.hv.getVM(w.replica.id)).powerState).toBe('running');
    expect(await liveDigest(w.hv, w.replica.id)).toBe(await liveDigest(w.hv, w.vmId));
    expect(await w.hv.failoverMark!(w.replica)).toEqual({ state: 'promoted', pointId: result.point.id });
    await expect(w.replication.run(w.job)).rejects.toMatchObject({ code: 'E_FAILED_OVER' });
  });

  it('unplanned failover: refused while the source runs unless forced; undo returns the replica to the point byte for byte and the next run is incremental', async () => {
    const w = await world();
    await expect(w.failover.unplanned(w.job)).rejects.toMatchObject({ code: 'E_SPLIT_BRAIN' });
    const before = await Promise.all(w.replica.disks.map((d) => readWholeDisk(w.hv, d)));
    const points = await w.hv.listRestorePoints(w.replica);
    await w.failover.unplanned(w.job, { force: true });
    expect((await w.hv.getVM(w.replica.id)).powerState).toBe('running');
    // The failed-over VM's guest writes on its first disk.
    await sim.host.guestWrite(w.replicaName, 0, 8192, new Uint8Array(70_000).fill(0xee));
    // What the guest wrote since the promotion, to the sector (70 000 bytes end mid-sector).
    expect(await w.hv.promotedChanges!(w.replica, w.replica.disks[0]!.id)).toEqual([{ offset: 8192, length: 70_144 }]);

    await w.failover.undo(w.job);
    expect((await w.failover.status(w.job)).state).toBe('ready');
    expect((await w.hv.getVM(w.replica.id)).powerState).toBe('stopped');
    for (const [i, disk] of w.replica.disks.entries()) {
      expect(compareBytes(await readWholeDisk(w.hv, disk), before[i]!)).toBe('equal');
    }
    expect(ids(await w.hv.listRestorePoints(w.replica))).toEqual(ids(points));

    await w.guestWrite(4);
    const next = await w.replication.run(w.job);
    expect(next.outcome, JSON.stringify(next.error)).toBe('completed');
    expect(next.disks.map((d) => d.mode)).toEqual(['tracked', 'tracked']);
    expect(next.warnings.map((x) => x.code)).not.toContain('W_REPLICA_MODIFIED');
    expect(await pointDigest(w.hv, w.replica.id, w.replica.disks)).toBe(await liveDigest(w.hv, w.vmId));
  });

  it('unplanned failover to an older point, commit (no undo after), permanent (the job is retired, the VM runs on)', async () => {
    const w = await world();
    const older = await readWholeDisk(w.hv, w.replica.disks[0]!);
    const [first] = await w.hv.listRestorePoints(w.replica);
    await w.guestWrite(5);
    expect((await w.replication.run(w.job)).outcome).toBe('completed');
    expect(await w.hv.listRestorePoints(w.replica)).toHaveLength(2);
    await w.hv.power(w.name, 'shutdown');

    await w.failover.unplanned(w.job, { pointId: first!.id });
    expect(compareBytes(await readWholeDisk(w.hv, w.replica.disks[0]!), older)).toBe('equal');
    await w.failover.commit(w.job);
    await expect(w.failover.undo(w.job)).rejects.toMatchObject({ code: 'E_FAILED_OVER' });
    expect(await w.hv.failoverMark!(w.replica)).toEqual({ state: 'committed', pointId: first!.id });
    await w.failover.permanent(w.job);
    expect((await w.failover.status(w.job)).state).toBe('retired');
    const refused = await w.replication.run(w.job).catch((error: unknown) => error);
    expect(isReplikitError(refused, 'E_FAILED_OVER')).toBe(true);
    expect((await w.hv.getVM(w.replica.id)).powerState).toBe('running');
  });

  it('reverse replication and failback: only the union of the changed blocks of both sides is sent, the original ends equal to the replica, and the original direction resumes tracked', async () => {
    const w = await world();
    await w.failover.planned(w.job, { shutdownTimeoutMs: 60_000 });
    // 1 % of the first disk written on the promoted replica, a few blocks on the (stopped) original.
    await sim.host.guestWrite(w.replicaName, 0, MiB, testPattern(7, 40_000));
    await sim.host.guestWrite(w.name, 1, 3 * 65_536, testPattern(8, 100));
    const replicaNow = await liveDigest(w.hv, w.replica.id);
    expect(await liveDigest(w.hv, w.vmId)).not.toBe(replicaNow);

    const result = await w.failover.reverse(w.job);
    // Tracked on both sides: 40 000 bytes at 1 MiB touch one 64 KiB block of the replica's first
    // disk, the original's write one block of its second; only their union is sent.
    expect(result.reverse.disks.map((d) => d.mode)).toEqual(['tracked', 'tracked']);
    expect(result.reverse.disks.map((d) => [d.blocksPromoted, d.blocksOriginal])).toEqual([
      [1, 0],
      [0, 1],
    ]);
    expect(result.reverse.blocksSent).toBe(2);
    expect(await liveDigest(w.hv, w.vmId)).toBe(replicaNow);
    expect((await w.failover.status(w.job)).state).toBe('failed-over');

    await sim.host.guestWrite(w.replicaName, 1, 0, testPattern(9, 512));
    const back = await w.failover.failback(w.job, { shutdownTimeoutMs: 60_000 });
    expect(back.forced).toBe(false);
    expect((await w.hv.getVM(w.name)).powerState).toBe('running');
    expect((await w.hv.getVM(w.replica.id)).powerState).toBe('stopped');
    expect(await w.hv.failoverMark!(w.replica)).toEqual({ state: 'replica' });
    expect((await w.failover.status(w.job)).state).toBe('ready');
    expect(await pointDigest(w.hv, w.replica.id, w.replica.disks)).toBe(await liveDigest(w.hv, w.vmId));
    // The forward run after the failback sends what the failback wrote, tracked (not a hash diff).
    const failbackRun = await w.stateStore.loadRun(back.run);
    expect(failbackRun?.disks.map((d) => d.mode)).toEqual(['tracked', 'tracked']);

    await w.guestWrite(10);
    const next = await w.replication.run(w.job);
    expect(next.outcome, JSON.stringify(next.error)).toBe('completed');
    expect(await pointDigest(w.hv, w.replica.id, w.replica.disks)).toBe(await liveDigest(w.hv, w.vmId));
  });
});
