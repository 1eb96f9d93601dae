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
  type JobSpec,
  parseJob,
  ReplicationEngine,
} from '@replikit/core';
import { readWholeDisk, testPattern } from '@replikit/core/testing';
import { localTransport } from '@replikit/transport';
import { afterEach, describe, expect, it } from 'vitest';
import { xenDriver } from '../src/index.js';
import { PASSWORD_ENV, startPool, type TestPool } from './helpers/xen-pool.js';

const MiB = 1024 * 1024;
const BLOCK = 65_536;

/** sha256 of `disks` of a VM, read through the driver's reader (a replica reads as its committed VDIs). */
async function disksDigest(hv: Hypervisor, disks: readonly DiskRef[]): Promise<string> {
  const hash = createHash('sha256');
  for (const disk of disks) hash.update(await readWholeDisk(hv, disk));
  return hash.digest('hex');
}

/** sha256 of a VM's disks as they are now, read through `openLiveDisk` (a running VM through a probe snapshot). */
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

/** VDI uuids (by userdevice) of a VM's disks now. */
async function vdiUuids(pool: TestPool, vmUuid: string): Promise<Map<string, string>> {
  const vm = await pool.call<string>('VM.get_by_uuid', vmUuid);
  const out = new Map<string, string>();
  for (const vbd of await pool.call<string[]>('VM.get_VBDs', vm)) {
    const vdi = await pool.call<string>('VBD.get_VDI', vbd);
    out.set(await pool.call<string>('VBD.get_userdevice', vbd), await pool.call<string>('VDI.get_uuid', vdi));
  }
  return out;
}

/** The names of the VDIs of the pool a probe or a leftover could be (snapshots without a VM). */
async function looseSnapshotVdis(pool: TestPool): Promise<string[]> {
  const vdis = await pool.call<Record<string, Record<string, unknown>>>('VDI.get_all_records');
  return Object.values(vdis)
    .filter((v) => v.is_a_snapshot === true && (v.VBDs as string[]).length === 0 && v.type !== 'cbt_metadata')
    .map((v) => String(v.uuid));
}

// Reverse replication and failback xen ► xen on the simulator (issue 19's failback acceptance,
// as packages/driver-file/test/failback.test.ts checks it for the file driver): after a planned
// failover, the promoted replica's guest writes 1 % of the blocks and the original a few after
// its last snapshot; reverse sends their union only and the original ends equal to the replica.
describe('reverse replication and failback xen ► xen', () => {
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
    dir = await mkdtemp(join(tmpdir(), 'rk-xen-failback-'));
    const vm = await pool.makeVM('web', [16 * MiB, 8 * MiB]); // 384 blocks of 64 KiB
    const xen = await pool.driver();
    closers.push(() => xen.close());
    const endpoint = { driver: 'xen', url: pool.sim.url, passwordEnv: PASSWORD_ENV };
    const job: JobSpec = parseJob({
      name: 'web-dr',
      source: { ...endpoint, vm: 'web' },
      target: { ...endpoint, replicaName: 'web-dr' },
      method: 'cbt',
      blockSize: BLOCK,
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
    /** The guest of `vmUuid` (running) writes 32 bytes into each named block; returns `device:block` keys. */
    const writeBlocks = async (vmUuid: string, writes: Array<[string, number]>, seed: number) => {
      const vdis = await vdiUuids(p, vmUuid);
      for (const [device, block] of writes) {
        const data = createHash('sha256').update(`${seed}:${device}:${block}`).digest();
        await p.writeGuest(vmUuid, vdis.get(device)!, block * BLOCK + 1000, data);
      }
      return writes.map(([d, b]) => `${d}:${b}`);
    };
    const disks = (await xen.getVM(vm.uuid)).disks;
    for (const [i, disk] of disks.entries()) await p.writeGuest(vm.uuid, disk.id, i * 3 * MiB, testPattern(i, MiB));
    const first = await replication.run(job);
    expect(first.outcome, JSON.stringify(first.error)).toBe('completed');
    return { xen, vm, job, replication, failover, stateStore, replica: first.replica!, writeBlocks };
  }

  it('after a planned failover, 1 % of blocks written on the promoted replica plus a few on the original: reverse sends at most their union and the original equals the replica; failback resumes incremental runs', async () => {
    const w = await world();
    const p = pool!;
    await w.failover.planned(w.job, { shutdownTimeoutMs: 60_000 });
    expect((await w.xen.getVM(w.replica.id)).powerState).toBe('running');
    // 1 % of the 384 blocks (4) on the promoted replica.
    const onReplica = await w.writeBlocks(
      w.replica.id,
      [
        ['0', 3],
        ['0', 200],
        ['1', 17],
        ['1', 100],
      ],
      1,
    );
    // The original after its last snapshot (its guest runs for a moment), one block shared.
    const originalRef = await p.call<string>('VM.get_by_uuid', w.vm.uuid);
    await p.call('VM.start', originalRef, false, false);
    const onOriginal = await w.writeBlocks(
      w.vm.uuid,
      [
        ['0', 200],
        ['0', 250],
        ['1', 5],
      ],
      2,
    );
    await p.call('VM.hard_shutdown', originalRef);
    const union = new Set([...onReplica, ...onOriginal]);
    expect(union.size).toBe(6);
    expect(await liveDigest(w.xen, w.vm.uuid)).not.toBe(await liveDigest(w.xen, w.replica.id));

    const result = await w.failover.reverse(w.job);
    expect(result.reverse.disks.map((d) => d.mode)).toEqual(['tracked', 'tracked']);
    expect(result.reverse.disks.map((d) => [d.blocksPromoted, d.blocksOriginal])).toEqual([
      [2, 2],
      [2, 1],
    ]);
    expect(result.reverse.blocksSent).toBe(union.size);
    const replicaNow = await disksDigest(w.xen, (await w.xen.getVM(w.replica.id)).disks);
    expect(await liveDigest(w.xen, w.replica.id)).toBe(replicaNow);
    expect(await liveDigest(w.xen, w.vm.uuid)).toBe(replicaNow);
    expect((await w.failover.status(w.job)).state).toBe('failed-over');
    expect((await w.xen.getVM(w.vm.uuid)).powerState).toBe('stopped');
    expect((await w.xen.getVM(w.replica.id)).powerState).toBe('running');
    expect(await looseSnapshotVdis(p)).toEqual([]); // every probe snapshot is gone

    // The replica's guest keeps writing; failback brings that over too, then resumes the original direction.
    await w.writeBlocks(w.replica.id, [['0', 77]], 3);
    const replicaLast = await liveDigest(w.xen, w.replica.id);
    const back = await w.failover.failback(w.job, { shutdownTimeoutMs: 60_000 });
    expect(back.forced).toBe(false);
    expect(back.passes.first.blocksSent).toBeLessThanOrEqual(union.size + 1);
    expect((await w.xen.getVM(w.vm.uuid)).powerState).toBe('running');
    expect((await w.xen.getVM(w.replica.id)).powerState).toBe('stopped');
    expect(await w.xen.failoverMark!(w.replica)).toEqual({ state: 'replica' });
    expect((await w.failover.status(w.job)).state).toBe('ready');
    const failbackRun = await w.stateStore.loadRun(back.run);
    expect(failbackRun?.disks.map((d) => d.mode)).toEqual(['tracked', 'tracked']);
    // The original, read through a snapshot of it (the xen driver reads a running VM's disks that way).
    const check = await w.xen.snapshot(w.vm.uuid, 'after-failback');
    expect(await disksDigest(w.xen, check.disks)).toBe(replicaLast);
    expect(await disksDigest(w.xen, w.replica.disks)).toBe(replicaLast);

    // The next forward run is incremental and the replica verifies.
    await w.writeBlocks(w.vm.uuid, [['1', 9]], 9);
    const next = await w.replication.run(w.job);
    expect(next.outcome, JSON.stringify(next.error)).toBe('completed');
    expect(next.disks.map((d) => d.mode)).toEqual(['tracked', 'tracked']);
    expect(await disksDigest(w.xen, w.replica.disks)).toBe(await disksDigest(w.xen, next.snapshot!.disks));
    expect(await looseSnapshotVdis(p)).toEqual([]);
  }, 240_000); // the simulated pool does every snapshot and upload for real, slow on a loaded machine

  it('openLiveDisk refuses to write a replica or a running VM (E_CONFLICT), and promotedChanges a replica that is not failed over (E_FAILED_OVER)', async () => {
    const w = await world();
    const disk = w.replica.disks[0]!;
    await expect(w.xen.promotedChanges!(w.replica, disk.id)).rejects.toMatchObject({ code: 'E_FAILED_OVER' });
    await expect(w.xen.openLiveDisk!(w.replica.id, disk.id, 'write')).rejects.toMatchObject({ code: 'E_CONFLICT' });
    const source = (await w.xen.getVM(w.vm.uuid)).disks[0]!;
    await expect(w.xen.openLiveDisk!(w.vm.uuid, source.id, 'write')).rejects.toMatchObject({ code: 'E_CONFLICT' });
    await expect(w.xen.openLiveDisk!(w.vm.uuid, 'no-such-disk', 'read')).rejects.toMatchObject({
      code: 'E_NOT_FOUND',
    });
  });

  it('a probe snapshot left by a process killed after taking it is destroyed by the next probe of that disk; promotedChanges still counts from the promotion point', async () => {
    const w = await world();
    await w.failover.unplanned(w.job, { force: true });
    const written = await w.writeBlocks(w.replica.id, [['0', 42]], 7);
    expect(written).toEqual(['0:42']);
    const killed = await pool!.driver(
      {},
      {
        failoverFaultHook: (point: string) => {
          if (point === 'probe:taken') throw new Error('killed after the probe snapshot');
        },
      },
    );
    closers.push(() => killed.close());
    const disk = w.replica.disks[0]!;
    await expect(killed.promotedChanges!(w.replica, disk.id)).rejects.toThrow(/killed after the probe/);
    await expect(killed.openLiveDisk!(w.replica.id, disk.id, 'read')).rejects.toThrow(/killed after the probe/);
    expect(await looseSnapshotVdis(pool!)).toHaveLength(1); // the second probe dropped the first one's leftover
    const changes = await w.xen.promotedChanges!(w.replica, disk.id);
    expect(changes).toEqual([{ offset: 42 * BLOCK, length: BLOCK }]);
    expect(await looseSnapshotVdis(pool!)).toEqual([]);
    // Asked again, the same answer: the destroyed probes merged their CBT logs back into the chain.
    expect(await w.xen.promotedChanges!(w.replica, disk.id)).toEqual([{ offset: 42 * BLOCK, length: BLOCK }]);
  });
});
