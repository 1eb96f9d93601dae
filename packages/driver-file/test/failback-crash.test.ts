import { cp } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createFileDriver, openGuestDisk } from '../src/index.js';
import { prepareCrashChild, runCrashChild } from './helpers/crash-runner.js';
import { createWorld, guestWrite, vmDigest, worldEngines, worldJob, worldPaths } from './helpers/failover-world.js';
import { makeTempRoot, removeTempRoots } from './helpers/temp-root.js';

const REPLICA = 'web-replica';
/**
 * Kills per operation (random fault points, then random delays): 10 for failback and 5 for a lone
 * reverse pass by default (each kill costs a child process); REPLIKIT_FAILOVER_CRASH_POINTS=<n>
 * gives both max(n, 10); REPLIKIT_CRASH_POINTS caps it (CI on Node 22/24).
 */
const FROM_ENV = Number(process.env.REPLIKIT_FAILOVER_CRASH_POINTS ?? 0);
const CAP = Number(process.env.REPLIKIT_CRASH_POINTS ?? 0);
const pointsFor = (op: Op): number => {
  const points = FROM_ENV > 0 ? Math.max(10, FROM_ENV) : op === 'reverse' ? 5 : 10;
  return CAP > 0 ? Math.min(CAP, points) : points;
};
const childSource = join(import.meta.dirname, 'helpers/failover-child.ts');

type Op = 'reverse' | 'failback';

interface Observed {
  state: string;
  pending: boolean;
  replicaPower: string;
  mark: string;
  replicaDigest: string;
  sourcePower: string;
  sourceDigest: string;
  points: number;
}

async function observe(dir: string): Promise<Observed> {
  const { vms, replicas } = worldPaths(dir);
  const source = createFileDriver({ root: vms });
  const target = createFileDriver({ root: replicas });
  const { failover, stateStore, replication } = worldEngines(dir);
  const record = await failover.status(worldJob(dir));
  const replica = (await stateStore.loadJob('web-dr'))!.replica!;
  const observed: Observed = {
    state: record.state,
    pending: record.operation !== undefined,
    replicaPower: (await target.getVM(REPLICA)).powerState,
    mark: (await target.failoverMark!(replica)).state,
    replicaDigest: await vmDigest(target, REPLICA),
    sourcePower: (await source.getVM('web')).powerState,
    sourceDigest: await vmDigest(source, 'web'),
    points: (await target.listRestorePoints(replica)).length,
  };
  await replication.close();
  return observed;
}

describe('reverse replication and failback survive SIGKILL at any point (child process)', () => {
  let command: string[];
  const templates = new Map<Op, { dir: string; before: Observed; after: Observed; ms: number; calls: number }>();

  beforeAll(async () => {
    command = await prepareCrashChild(childSource);
  }, 120_000);
  afterAll(removeTempRoots);

  /** A world failed over (planned), with writes on the promoted replica and on the original since. */
  async function template(op: Op) {
    const dir = await makeTempRoot(`rk-fb-${op}-`);
    await createWorld(dir);
    const { failover, replication } = worldEngines(dir);
    await failover.planned(worldJob(dir), { shutdownTimeoutMs: 60_000 });
    await replication.close();
    const disk = await openGuestDisk(worldPaths(dir).replicas, REPLICA, 'd0');
    await disk.write(8192, new Uint8Array(30_000).fill(0xab));
    await disk.close();
    await guestWrite(dir, 4); // the stopped original, after its last snapshot
    const before = await observe(dir);
    const probe = await makeTempRoot(`rk-fb-${op}-probe-`);
    await cp(dir, probe, { recursive: true });
    const started = Date.now();
    const outcome = await runCrashChild(command, { dir: probe, op, killAt: 0 });
    const ms = Date.now() - started;
    expect(outcome.stdout, outcome.stderr).toContain('done');
    const calls = Number(/calls=(\d+)/.exec(outcome.stdout)![1]);
    return { dir, before, after: await observe(probe), ms, calls };
  }

  const expectations: Record<Op, (t: { before: Observed; after: Observed }) => void> = {
    reverse: ({ before, after }) => {
      expect(before).toMatchObject({ state: 'failed-over', replicaPower: 'running', sourcePower: 'stopped' });
      expect(before.sourceDigest).not.toBe(before.replicaDigest);
      expect(after).toMatchObject({ state: 'failed-over', replicaPower: 'running', sourcePower: 'stopped' });
      expect(after.sourceDigest).toBe(after.replicaDigest);
      expect(after.replicaDigest).toBe(before.replicaDigest);
    },
    failback: ({ before, after }) => {
      expect(after).toMatchObject({ state: 'ready', replicaPower: 'stopped', mark: 'replica', sourcePower: 'running' });
      // The stopped replica reads as its newest point: the failback's run made it of what the replica's guest wrote.
      expect(after.sourceDigest).toBe(before.replicaDigest);
      expect(after.replicaDigest).toBe(before.replicaDigest);
    },
  };

  for (const op of ['reverse', 'failback'] as const) {
    it(`${op}: after a SIGKILL anywhere and a resume, the VMs are in the before- or after-state`, async () => {
      const t = templates.get(op) ?? (await template(op));
      templates.set(op, t);
      expectations[op](t);
      const { pending: _p, ...afterState } = t.after;
      const { pending: _q, ...beforeState } = t.before;
      const points = Array.from({ length: t.calls }, (_, i) => i + 1).sort(() => Math.random() - 0.5);
      const POINTS = pointsFor(op);
      const kills: Array<{ killAt: number; delay?: number }> = points.slice(0, POINTS).map((killAt) => ({ killAt }));
      while (kills.length < POINTS) kills.push({ killAt: 0, delay: Math.floor(Math.random() * t.ms) });
      const one = async (kill: { killAt: number; delay?: number }) => {
        const dir = await makeTempRoot(`rk-fb-${op}-k-`);
        await cp(t.dir, dir, { recursive: true });
        const outcome = await runCrashChild(command, { dir, op, killAt: kill.killAt }, kill.delay);
        const what = `${op} killed at ${kill.delay === undefined ? `point ${kill.killAt}` : `${kill.delay} ms`}`;
        if (kill.delay === undefined) expect(outcome.signal, `${what}: ${outcome.stderr}`).toBe('SIGKILL');
        // A replica being written never runs.
        const target = createFileDriver({ root: worldPaths(dir).replicas });
        const { stateStore } = worldEngines(dir);
        const replica = (await stateStore.loadJob('web-dr'))!.replica!;
        if ((await target.getVM(REPLICA)).powerState === 'running') {
          expect(await target.replicaMark(replica), what).toBe('ready');
        }
        const { failover, replication } = worldEngines(dir);
        await failover.resume(worldJob(dir));
        await replication.close();
        const { pending, ...now } = await observe(dir);
        expect(pending, what).toBe(false);
        expect([beforeState, afterState], what).toContainEqual(now);
      };
      for (let i = 0; i < kills.length; i += 3) await Promise.all(kills.slice(i, i + 3).map(one));
      expect(kills.length).toBe(POINTS);
    }, 240_000);
  }

  // A kill after the replica's failover flag is cleared and before its failover hold is dropped
  // left the hold of a dead process: the resumed demote returned early, and the next run of the
  // job (the failback's own forward run, or any run after an undo) was refused with E_CONFLICT.
  for (const op of ['failback', 'undo'] as const) {
    it(`${op} killed right after the replica's failover flag is cleared: after a resume the job replicates again`, async () => {
      const dir = await makeTempRoot(`rk-fb-flag-${op}-`);
      await createWorld(dir);
      const engines = worldEngines(dir);
      if (op === 'failback') await engines.failover.planned(worldJob(dir), { shutdownTimeoutMs: 60_000 });
      else await engines.failover.unplanned(worldJob(dir), { force: true });
      await engines.replication.close();
      const outcome = await runCrashChild(command, { dir, op, killAt: 0, killAtName: 'demote:flag-cleared' });
      expect(outcome.signal, outcome.stderr).toBe('SIGKILL');
      const { failover, replication } = worldEngines(dir);
      await failover.resume(worldJob(dir));
      expect((await failover.status(worldJob(dir))).state).toBe('ready');
      if (op === 'failback') await createFileDriver({ root: worldPaths(dir).vms }).power('web', 'shutdown');
      await guestWrite(dir, 11);
      const run = await replication.run(worldJob(dir));
      expect(run.state).toBe('completed');
      await replication.close();
    }, 120_000);
  }
});
