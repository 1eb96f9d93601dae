import { isReplikitError, listOrphans, type RestorePoint } from '@replikit/core';
import { compareBytes, readWholeDisk } from '@replikit/core/testing';
import { afterAll, describe, expect, it } from 'vitest';
import { createFileDriver, openGuestDisk } from '../src/index.js';
import { createWorld, guestWrite, vmDigest, worldEngines, worldJob, worldPaths } from './helpers/failover-world.js';
import { makeTempRoot, removeTempRoots } from './helpers/temp-root.js';

const REPLICA = 'web-replica';

async function world() {
  const dir = await makeTempRoot('rk-failover-');
  await createWorld(dir);
  const { vms, replicas } = worldPaths(dir);
  return {
    dir,
    job: worldJob(dir),
    source: createFileDriver({ root: vms }),
    target: createFileDriver({ root: replicas }),
    ...worldEngines(dir),
  };
}

/** Writes as the failed-over replica's guest would. */
async function writeOnReplica(dir: string): Promise<void> {
  const disk = await openGuestDisk(worldPaths(dir).replicas, REPLICA, 'd0');
  try {
    await disk.write(4096, new Uint8Array(70_000).fill(0xee));
  } finally {
    await disk.close();
  }
}

const ids = (points: RestorePoint[]) => points.map((p) => p.id);

describe('failover engine with the file driver', () => {
  afterAll(removeTempRoots);

  it('test failover: the clone holds the point, a run during it completes, the clone is gone after, the points are untouched', async () => {
    const w = await world();
    const replica = (await w.stateStore.loadJob('web-dr'))!.replica!;
    const pointsBefore = await w.target.listRestorePoints(replica);
    const pointDigest = await vmDigest(w.target, REPLICA);
    let runDuring: string | undefined;
    const result = await w.failover.test(w.job, {
      command: [process.execPath, '-e', 'process.exit(process.env.REPLIKIT_CLONE_ID ? 0 : 3)'],
      check: async (clone, hv) => {
        expect((await hv.getVM(clone.id)).powerState).toBe('running');
        expect(await vmDigest(hv, clone.id)).toBe(pointDigest);
        // Replication of the job goes on while the clone runs.
        await guestWrite(w.dir, 2);
        const run = await w.replication.run(w.job);
        expect(run.state).toBe('completed');
        runDuring = run.runId;
      },
    });
    expect(result.verdict).toEqual({ passed: true, started: true, command: expect.objectContaining({ exitCode: 0 }) });
    expect(result.point.id).toBe(pointsBefore[pointsBefore.length - 1]!.id);
    await expect(w.target.getVM(result.clone.id)).rejects.toMatchObject({ code: 'E_NOT_FOUND' });
    expect(await w.target.listClones!(replica)).toEqual([]);
    const after = await w.target.listRestorePoints(replica);
    expect(ids(after).slice(0, pointsBefore.length)).toEqual(ids(pointsBefore));
    expect(after.map((p) => p.label)).toContain(runDuring);
    expect((await w.failover.status(w.job)).history.at(-1)).toMatchObject({ kind: 'test', outcome: 'succeeded' });
    // A failing health command fails the verdict, and the clone is torn down all the same.
    const failed = await w.failover.test(w.job, { command: [process.execPath, '-e', 'process.exit(7)'] });
    expect(failed.verdict).toMatchObject({ passed: false, started: true, command: { exitCode: 7 } });
    expect(await w.target.listClones!(replica)).toEqual([]);
    await w.replication.close();
  });

  it('a run that commits while a clone is copied is never refused: the clone is made again of the new newest point', async () => {
    const w = await world();
    const replica = (await w.stateStore.loadJob('web-dr'))!.replica!;
    let commits = 0;
    /** At the first copied clone, a run of the job commits a new point (the replica changes under the copy). */
    const commitOnce = async (point: string) => {
      if (point !== 'clone:copied' || commits > 0) return;
      commits += 1;
      await guestWrite(w.dir, 9 + commits);
      expect((await w.replication.run(w.job)).state).toBe('completed');
    };
    // The driver: the copy of the old point is refused and removed; the run's commit went through.
    const hooked = createFileDriver({ root: worldPaths(w.dir).replicas, faultHook: commitOnce });
    const [first] = await hooked.listRestorePoints(replica);
    await expect(
      hooked.cloneRestorePoint!(replica, first!, { name: 'racing', operationId: 'op-race' }),
    ).rejects.toMatchObject({ code: 'E_CONFLICT' });
    expect(commits).toBe(1);
    expect(await w.target.listRestorePoints(replica)).toHaveLength(2);
    expect(await w.target.listClones!()).toEqual([]);
    // The engine: a test failover racing a run clones the new newest point.
    commits = 0;
    const { failover, replication } = worldEngines(w.dir, { driver: commitOnce });
    const result = await failover.test(w.job);
    expect(commits).toBe(1);
    const points = await w.target.listRestorePoints(replica);
    expect(points).toHaveLength(3);
    expect(result.point.id).toBe(points[2]!.id);
    expect(result.verdict.passed).toBe(true);
    expect(await w.target.listClones!()).toEqual([]);
    await replication.close();
    await w.replication.close();
  });

  it('retention counts only restore points: runs that prune the cloned point leave the clone whole', async () => {
    const w = await world();
    const job = worldJob(w.dir, { retention: 1 });
    const replica = (await w.stateStore.loadJob('web-dr'))!.replica!;
    const pointDigest = await vmDigest(w.target, REPLICA);
    const [cloned] = await w.target.listRestorePoints(replica);
    const result = await w.failover.test(job, {
      check: async (clone, hv) => {
        for (const seed of [7, 8]) {
          await guestWrite(w.dir, seed);
          expect((await w.replication.run(job)).state).toBe('completed');
        }
        expect(ids(await w.target.listRestorePoints(replica))).not.toContain(cloned!.id);
        expect(await vmDigest(hv, clone.id)).toBe(pointDigest);
      },
    });
    expect(result.verdict.passed).toBe(true);
    expect(await w.target.listClones!()).toEqual([]);
    await w.replication.close();
  });

  it('listOrphans names a clone no operation owns and a run snapshot that is not the base, and nothing else', async () => {
    const w = await world();
    const history = await w.stateStore.loadJob('web-dr');
    const replica = history!.replica!;
    const [point] = await w.target.listRestorePoints(replica);
    await w.target.cloneRestorePoint!(replica, point!, { name: 'left-behind', operationId: 'test-lost' });
    const stray = await w.source.snapshot('web', 'web-dr-crashed-run');
    await w.source.snapshot('web', 'someone-else');
    const orphans = await listOrphans({
      job: 'web-dr',
      sourceVm: 'web',
      source: w.source,
      target: w.target,
      history,
      failover: await w.failover.status(w.job),
    });
    expect(orphans.map((o) => `${o.kind}:${o.id}`).sort()).toEqual(['clone:left-behind', `snapshot:${stray.id}`]);
    await w.replication.close();
  });

  it('planned failover: every byte written before the shutdown is on the promoted replica; the source is stopped; the replica runs', async () => {
    const w = await world();
    await guestWrite(w.dir, 3); // after the last run, while the source runs
    const result = await w.failover.planned(w.job, { shutdownTimeoutMs: 60_000 });
    expect(result.forced).toBe(false);
    expect((await w.source.getVM('web')).powerState).toBe('stopped');
    expect((await w.target.getVM(REPLICA)).powerState).toBe('running');
    expect(await vmDigest(w.target, REPLICA)).toBe(await vmDigest(w.source, 'web'));
    expect((await w.failover.status(w.job)).state).toBe('failed-over');
    // No run writes a failed-over replica; no second failover.
    await expect(w.replication.run(w.job)).rejects.toMatchObject({ code: 'E_FAILED_OVER' });
    await expect(w.failover.unplanned(w.job, { force: true })).rejects.toMatchObject({ code: 'E_FAILED_OVER' });
    await w.replication.close();
  });

  it('unplanned failover: refused while the source runs (split brain) unless forced; undo returns the replica to the point byte for byte and the next run is incremental', async () => {
    const w = await world();
    await expect(w.failover.unplanned(w.job)).rejects.toMatchObject({ code: 'E_SPLIT_BRAIN' });
    const refused = await w.failover.status(w.job);
    expect(refused.state).toBe('ready');
    expect(refused.operation).toBeUndefined();
    expect(refused.history.at(-1)).toMatchObject({ kind: 'unplanned', outcome: 'refused' });
    expect((await w.target.getVM(REPLICA)).powerState).toBe('stopped');
    // Undo and commit of a replica that never failed over are refused.
    await expect(w.failover.undo(w.job)).rejects.toMatchObject({ code: 'E_FAILED_OVER' });
    await expect(w.failover.commit(w.job)).rejects.toMatchObject({ code: 'E_FAILED_OVER' });

    const replica = (await w.stateStore.loadJob('web-dr'))!.replica!;
    const before = await readWholeDisk(w.target, replica.disks[0]!);
    const points = await w.target.listRestorePoints(replica);
    await w.failover.unplanned(w.job, { force: true });
    expect((await w.target.getVM(REPLICA)).powerState).toBe('running');
    await writeOnReplica(w.dir);
    expect(compareBytes(await readWholeDisk(w.target, replica.disks[0]!), before)).not.toBe('equal');

    await w.failover.undo(w.job);
    expect((await w.failover.status(w.job)).state).toBe('ready');
    expect((await w.target.getVM(REPLICA)).powerState).toBe('stopped');
    expect(compareBytes(await readWholeDisk(w.target, replica.disks[0]!), before)).toBe('equal');
    expect(ids(await w.target.listRestorePoints(replica))).toEqual(ids(points));

    await guestWrite(w.dir, 4);
    const next = await w.replication.run(w.job);
    expect(next.state).toBe('completed');
    expect(next.disks.map((d) => d.mode)).toEqual(['tracked', 'tracked']);
    expect(next.warnings.map((x) => x.code)).not.toContain('W_REPLICA_MODIFIED');
    await w.replication.close();
  });

  it('unplanned failover to an older point: the replica holds that point; commit ends undo; permanent retires the job', async () => {
    const w = await world();
    const replica = (await w.stateStore.loadJob('web-dr'))!.replica!;
    const older = await readWholeDisk(w.target, replica.disks[0]!);
    const [first] = await w.target.listRestorePoints(replica);
    await guestWrite(w.dir, 5);
    await w.replication.run(w.job);
    expect(await w.target.listRestorePoints(replica)).toHaveLength(2);
    await w.source.power('web', 'shutdown');

    await w.failover.unplanned(w.job, { pointId: first!.id });
    expect(compareBytes(await readWholeDisk(w.target, replica.disks[0]!), older)).toBe('equal');
    expect((await w.failover.status(w.job)).point?.id).toBe(first!.id);
    await w.failover.commit(w.job);
    await expect(w.failover.undo(w.job)).rejects.toMatchObject({ code: 'E_FAILED_OVER' });
    expect(await w.target.failoverMark!(replica)).toEqual({ state: 'committed', pointId: first!.id });
    await w.failover.permanent(w.job);
    expect((await w.failover.status(w.job)).state).toBe('retired');
    const refused = await w.replication.run(w.job).catch((error: unknown) => error);
    expect(isReplikitError(refused, 'E_FAILED_OVER')).toBe(true);
    expect((refused as Error).message).toMatch(/retired/);
    // The VM is an ordinary VM now, running.
    expect((await w.target.getVM(REPLICA)).powerState).toBe('running');
    await w.replication.close();
  });
});
