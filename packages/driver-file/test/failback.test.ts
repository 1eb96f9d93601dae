import { createHash } from 'node:crypto';
import { DriverRegistry, defineDriver, FailoverEngine, FileFailoverStore, type Hypervisor } from '@replikit/core';
import { afterAll, describe, expect, it } from 'vitest';
import { createFileDriver, FILE_DRIVER_CAPABILITIES, fileDriverOptionsSchema, openGuestDisk } from '../src/index.js';
import { createWorld, guestWrite, vmDigest, worldEngines, worldJob, worldPaths } from './helpers/failover-world.js';
import { makeTempRoot, removeTempRoots } from './helpers/temp-root.js';

const REPLICA = 'web-replica';
const BLOCK = 65_536;
const MiB = 1024 * 1024;

async function world(sizesMiB: [number, number] = [2, 1]) {
  const dir = await makeTempRoot('rk-failback-');
  await createWorld(dir, sizesMiB);
  const { vms, replicas } = worldPaths(dir);
  return {
    dir,
    job: worldJob(dir),
    source: createFileDriver({ root: vms }),
    target: createFileDriver({ root: replicas }),
    ...worldEngines(dir),
  };
}

/** Writes a few bytes (different from what is there) into each block `blocks` names, through the guest path; returns `disk:block` keys. */
async function writeBlocks(root: string, vm: string, writes: Array<[string, number]>, seed: number): Promise<string[]> {
  for (const [diskId, block] of writes) {
    const disk = await openGuestDisk(root, vm, diskId);
    try {
      await disk.write(block * BLOCK + 1000, createHash('sha256').update(`${seed}:${diskId}:${block}`).digest());
    } finally {
      await disk.close();
    }
  }
  return writes.map(([d, b]) => `${d}:${b}`);
}

/** sha256 of a VM's live disks, read through the reverse hook (a promoted replica reads as it runs). */
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

describe('reverse replication and failback with the file driver', () => {
  afterAll(removeTempRoots);

  it('after a planned failover, 1 % of blocks written on the promoted replica plus blocks written on the original: the reverse run sends at most their union and the original equals the replica; failback resumes incremental runs', async () => {
    const w = await world([16, 8]); // 384 blocks of 64 KiB
    const { vms, replicas } = worldPaths(w.dir);
    await w.failover.planned(w.job, { shutdownTimeoutMs: 60_000 });
    // 1 % of the 384 blocks (4) on the promoted replica, 3 on the original after its last snapshot (one shared).
    const onReplica = await writeBlocks(
      replicas,
      REPLICA,
      [
        ['d0', 3],
        ['d0', 200],
        ['d1', 17],
        ['d1', 100],
      ],
      1,
    );
    const onOriginal = await writeBlocks(
      vms,
      'web',
      [
        ['d0', 200],
        ['d0', 250],
        ['d1', 5],
      ],
      2,
    );
    const union = new Set([...onReplica, ...onOriginal]);
    expect(union.size).toBe(6);
    expect(await liveDigest(w.source, 'web')).not.toBe(await liveDigest(w.target, REPLICA));

    const result = await w.failover.reverse(w.job);
    expect(result.reverse.disks.map((d) => d.mode)).toEqual(['tracked', 'tracked']);
    expect(result.reverse.disks.map((d) => [d.blocksPromoted, d.blocksOriginal])).toEqual([
      [2, 2],
      [2, 1],
    ]);
    expect(result.reverse.blocksSent).toBeLessThanOrEqual(union.size);
    expect(result.reverse.blocksSent).toBe(6);
    expect(await liveDigest(w.source, 'web')).toBe(await liveDigest(w.target, REPLICA));
    const status = await w.failover.status(w.job);
    expect(status.state).toBe('failed-over');
    expect(status.history.at(-1)).toMatchObject({ kind: 'reverse', outcome: 'succeeded', sent: { blocks: 6 } });
    expect((await w.source.getVM('web')).powerState).toBe('stopped');
    expect((await w.target.getVM(REPLICA)).powerState).toBe('running');

    // The replica's guest keeps writing; failback brings that over too, then resumes the original direction.
    await writeBlocks(replicas, REPLICA, [['d0', 77]], 3);
    const replicaNow = await liveDigest(w.target, REPLICA);
    const back = await w.failover.failback(w.job, { shutdownTimeoutMs: 60_000 });
    expect(back.forced).toBe(false);
    expect(back.passes.first.blocksSent).toBeLessThanOrEqual(7);
    expect(await vmDigest(w.source, 'web')).toBe(replicaNow);
    expect(await vmDigest(w.target, REPLICA)).toBe(replicaNow);
    expect((await w.source.getVM('web')).powerState).toBe('running');
    expect((await w.target.getVM(REPLICA)).powerState).toBe('stopped');
    const replica = (await w.stateStore.loadJob('web-dr'))!.replica!;
    expect(await w.target.failoverMark!(replica)).toEqual({ state: 'replica' });
    expect((await w.target.listRestorePoints(replica)).at(-1)?.label).toBe(back.run);
    expect((await w.failover.status(w.job)).state).toBe('ready');
    // The failback's forward run sent only the tracked blocks (the failback's writes), not every block.
    const failbackRun = await w.stateStore.loadRun(back.run);
    expect(failbackRun?.disks.map((d) => d.mode)).toEqual(['tracked', 'tracked']);

    // The next forward run is incremental and the replica verifies.
    await guestWrite(w.dir, 9);
    const next = await w.replication.run(w.job);
    expect(next.state).toBe('completed');
    expect(next.disks.map((d) => d.mode)).toEqual(['tracked', 'tracked']);
    expect(await vmDigest(w.target, REPLICA)).toBe(await vmDigest(w.source, 'web'));
    await w.replication.close();
  });

  it('after an unplanned failover while the original kept running: its writes since the last run are counted and sent, and the original ends equal to the replica', async () => {
    const w = await world([8, 4]); // 192 blocks
    const { vms, replicas } = worldPaths(w.dir);
    await w.failover.unplanned(w.job, { force: true }); // the original still runs and writes
    const onOriginal = await writeBlocks(
      vms,
      'web',
      [
        ['d0', 10],
        ['d1', 60],
      ],
      4,
    );
    await w.source.power('web', 'shutdown');
    const onReplica = await writeBlocks(
      replicas,
      REPLICA,
      [
        ['d0', 10],
        ['d0', 100],
      ],
      5,
    );
    const union = new Set([...onReplica, ...onOriginal]);
    const result = await w.failover.reverse(w.job);
    expect(result.commonSnapshot?.id).toBe((await w.stateStore.loadJob('web-dr'))!.baseSnapshot!.id);
    expect(result.reverse.disks.map((d) => [d.mode, d.blocksPromoted, d.blocksOriginal])).toEqual([
      ['tracked', 2, 1],
      ['tracked', 0, 1],
    ]);
    expect(result.reverse.blocksSent).toBeLessThanOrEqual(union.size);
    expect(await liveDigest(w.source, 'web')).toBe(await liveDigest(w.target, REPLICA));
    // A second pass sends what the replica wrote since, plus the blocks the first pass wrote (the original's tracker counts them).
    await writeBlocks(replicas, REPLICA, [['d1', 3]], 6);
    const again = await w.failover.reverse(w.job);
    expect(again.reverse.blocksSent).toBeLessThanOrEqual(union.size + 1);
    expect(await liveDigest(w.source, 'web')).toBe(await liveDigest(w.target, REPLICA));
    await w.replication.close();
  });

  it('refusals: a replica that is not failed over, no common point (unless --full), a retired job, a driver without the hooks', async () => {
    const w = await world();
    await expect(w.failover.reverse(w.job)).rejects.toMatchObject({ code: 'E_FAILED_OVER' });
    await expect(w.failover.failback(w.job)).rejects.toMatchObject({ code: 'E_FAILED_OVER' });
    expect((await w.failover.status(w.job)).history.at(-1)).toMatchObject({ kind: 'failback', outcome: 'refused' });

    // Promoted at an older point: the original's last snapshot is not that point.
    const replica = (await w.stateStore.loadJob('web-dr'))!.replica!;
    const [first] = await w.target.listRestorePoints(replica);
    await guestWrite(w.dir, 5);
    await w.replication.run(w.job);
    await w.source.power('web', 'shutdown');
    await w.failover.unplanned(w.job, { pointId: first!.id });
    const refused = await w.failover.reverse(w.job).catch((error: unknown) => error);
    expect(refused).toMatchObject({ code: 'E_FAILED_OVER', details: { reason: 'no-common-point' } });
    expect((refused as Error).message).toMatch(/--full/);
    const after = await w.failover.status(w.job);
    expect(after.state).toBe('failed-over');
    expect(after.operation).toBeUndefined();
    expect(after.history.at(-1)).toMatchObject({ kind: 'reverse', outcome: 'refused' });

    // A driver without the reverse hooks: E_UNSUPPORTED, nothing changed.
    const bare = new DriverRegistry().register(
      defineDriver({
        kind: 'file',
        capabilities: FILE_DRIVER_CAPABILITIES,
        options: fileDriverOptionsSchema,
        create: (options) => Object.assign(createFileDriver(options), { openLiveDisk: undefined }),
      }),
    );
    const { state } = worldPaths(w.dir);
    const noHooks = new FailoverEngine({
      stateStore: w.stateStore,
      failoverStore: new FileFailoverStore(state),
      drivers: bare,
    });
    await expect(noHooks.reverse(w.job, { full: true })).rejects.toMatchObject({ code: 'E_UNSUPPORTED' });

    // --full copies every block and the original equals the replica.
    const full = await w.failover.reverse(w.job, { full: true });
    expect(full.commonSnapshot).toBeUndefined();
    expect(full.reverse.disks.map((d) => d.mode)).toEqual(['full', 'full']);
    expect(await liveDigest(w.source, 'web')).toBe(await liveDigest(w.target, REPLICA));

    await w.failover.permanent(w.job);
    await expect(w.failover.reverse(w.job, { full: true })).rejects.toMatchObject({ code: 'E_FAILED_OVER' });
    await expect(w.failover.failback(w.job)).rejects.toMatchObject({ code: 'E_FAILED_OVER' });
    await w.replication.close();
  });

  it('failback --full without a common point: the original ends equal to the replica, and the job replicates again', async () => {
    const w = await world();
    const replica = (await w.stateStore.loadJob('web-dr'))!.replica!;
    const [first] = await w.target.listRestorePoints(replica);
    await guestWrite(w.dir, 5);
    await w.replication.run(w.job);
    await w.source.power('web', 'shutdown');
    await w.failover.unplanned(w.job, { pointId: first!.id });
    await writeBlocks(worldPaths(w.dir).replicas, REPLICA, [['d0', 2]], 8);
    const replicaNow = await liveDigest(w.target, REPLICA);
    await expect(w.failover.failback(w.job)).rejects.toMatchObject({ details: { reason: 'no-common-point' } });
    const back = await w.failover.failback(w.job, { full: true, shutdownTimeoutMs: 60_000 });
    expect(back.passes.final.disks.map((d) => d.mode)).toEqual(['full', 'full']);
    expect(await vmDigest(w.source, 'web')).toBe(replicaNow);
    expect(await vmDigest(w.target, REPLICA)).toBe(replicaNow);
    expect((await w.failover.status(w.job)).state).toBe('ready');
    await guestWrite(w.dir, 9);
    expect((await w.replication.run(w.job)).state).toBe('completed');
    expect(await vmDigest(w.target, REPLICA)).toBe(await vmDigest(w.source, 'web'));
    await w.replication.close();
  });

  it('reverse refuses to write an original that runs (unplanned failover with --force)', async () => {
    const w = await world();
    await w.failover.unplanned(w.job, { force: true });
    await expect(w.failover.reverse(w.job)).rejects.toMatchObject({ code: 'E_CONFLICT' });
    await w.replication.close();
  });
});
