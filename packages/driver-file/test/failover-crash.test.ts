import { cp } from 'node:fs/promises';
import { join } from 'node:path';
import type { Hypervisor } from '@replikit/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createFileDriver, openGuestDisk } from '../src/index.js';
import { type FailoverOp, failoverCrashPoints } from './helpers/crash-points.js';
import { prepareCrashChild, runCrashChild } from './helpers/crash-runner.js';
import { createWorld, guestWrite, vmDigest, worldEngines, worldJob, worldPaths } from './helpers/failover-world.js';
import { makeTempRoot, removeTempRoots } from './helpers/temp-root.js';

const REPLICA = 'web-replica';
/**
 * Kills per operation (`failoverCrashPoints`): 10 each by default, at random fault points it
 * reaches, then after random delays. Each kill costs a child process (~1 s on a loaded machine);
 * REPLIKIT_CRASH_POINTS caps them (`.ci/run` on Node 22 and 24), REPLIKIT_FAILOVER_CRASH_POINTS raises them.
 */
const pointsFor = (op: Op): number => failoverCrashPoints(op, process.env);
const childSource = join(import.meta.dirname, 'helpers/failover-child.ts');

type Op = FailoverOp;

/** What a world looks like, to tell a before-state from an after-state. */
interface Observed {
  state: string;
  pending: boolean;
  replicaPower: string;
  mark: string;
  replicaDigest: string;
  sourcePower: string;
  sourceDigest: string;
  clones: number;
  points: string;
}

async function observe(dir: string): Promise<Observed> {
  const { vms, replicas } = worldPaths(dir);
  const source = createFileDriver({ root: vms });
  const target: Hypervisor = createFileDriver({ root: replicas });
  const { failover, stateStore, replication } = worldEngines(dir);
  const record = await failover.status(worldJob(dir));
  const replica = (await stateStore.loadJob('web-dr'))!.replica!;
  const vm = await target.getVM(REPLICA);
  const mark = await target.failoverMark!(replica).then(
    (m) => m.state,
    () => 'plain VM',
  );
  const observed: Observed = {
    state: record.state,
    pending: record.operation !== undefined,
    replicaPower: vm.powerState,
    mark,
    replicaDigest: await vmDigest(target, REPLICA),
    sourcePower: (await source.getVM('web')).powerState,
    sourceDigest: await vmDigest(source, 'web'),
    clones: (await target.listClones!()).length,
    points:
      mark === 'plain VM'
        ? ''
        : (await target.listRestorePoints(replica))
            .map((p) => p.id)
            .slice(0, 1)
            .join(','),
  };
  await replication.close();
  return observed;
}

/** Never: a replica that runs while it is being written, or while it is not failed over. */
async function checkNeverBetween(dir: string): Promise<void> {
  const target = createFileDriver({ root: worldPaths(dir).replicas });
  const { stateStore } = worldEngines(dir);
  const replica = (await stateStore.loadJob('web-dr'))!.replica!;
  if ((await target.getVM(REPLICA)).powerState === 'running') {
    const mark = await target.failoverMark!(replica).catch(() => ({ state: 'plain VM' }));
    expect(['promoted', 'committed', 'plain VM']).toContain(mark.state);
    if (mark.state !== 'plain VM') expect(await target.replicaMark(replica)).toBe('ready');
  }
}

describe('failover operations survive SIGKILL at any point (child process)', () => {
  let command: string[];
  const templates = new Map<Op, { dir: string; before: Observed; after: Observed; ms: number; calls: number }>();

  beforeAll(async () => {
    command = await prepareCrashChild(childSource);
  }, 120_000);
  afterAll(removeTempRoots);

  /** A template world in the operation's before-state; its after-state and fault point count, measured once. */
  async function template(op: Op) {
    const dir = await makeTempRoot(`rk-fo-${op}-`);
    await createWorld(dir);
    const { failover, replication } = worldEngines(dir);
    const job = worldJob(dir);
    if (op === 'planned') await guestWrite(dir, 6);
    if (op === 'undo' || op === 'commit' || op === 'permanent') {
      await failover.unplanned(job, { force: true });
      const disk = await openGuestDisk(worldPaths(dir).replicas, REPLICA, 'd0');
      await disk.write(8192, new Uint8Array(30_000).fill(0xab));
      await disk.close();
    }
    await replication.close();
    const before = await observe(dir);
    const probe = await makeTempRoot(`rk-fo-${op}-probe-`);
    await cp(dir, probe, { recursive: true });
    const started = Date.now();
    const outcome = await runCrashChild(command, { dir: probe, op, killAt: 0 });
    const ms = Date.now() - started;
    expect(outcome.stdout, outcome.stderr).toContain('done');
    const calls = Number(/calls=(\d+)/.exec(outcome.stdout)![1]);
    const after = await observe(probe);
    return { dir, before, after, ms, calls };
  }

  const expectations: Record<Op, (t: { before: Observed; after: Observed }) => void> = {
    test: ({ before, after }) => expect(after).toEqual(before),
    unplanned: ({ before, after }) => {
      expect(before).toMatchObject({ state: 'ready', replicaPower: 'stopped', mark: 'replica' });
      expect(after).toMatchObject({ state: 'failed-over', replicaPower: 'running', mark: 'promoted' });
      expect(after.replicaDigest).toBe(before.replicaDigest);
    },
    undo: ({ before, after }) => {
      expect(before).toMatchObject({ state: 'failed-over', replicaPower: 'running', mark: 'promoted' });
      expect(after).toMatchObject({ state: 'ready', replicaPower: 'stopped', mark: 'replica' });
      expect(after.replicaDigest).not.toBe(before.replicaDigest);
    },
    planned: ({ before, after }) => {
      expect(before).toMatchObject({ state: 'ready', sourcePower: 'running', replicaPower: 'stopped' });
      expect(after).toMatchObject({ state: 'failed-over', sourcePower: 'stopped', replicaPower: 'running' });
      expect(after.replicaDigest).toBe(after.sourceDigest);
    },
    commit: ({ after }) => expect(after).toMatchObject({ state: 'committed', mark: 'committed' }),
    permanent: ({ after }) => expect(after).toMatchObject({ state: 'retired', mark: 'plain VM' }),
  };

  for (const op of ['test', 'unplanned', 'undo', 'planned', 'commit', 'permanent'] as const) {
    it(`${op}: after a SIGKILL anywhere and a resume, the world is in the before- or after-state`, async () => {
      const t = templates.get(op) ?? (await template(op));
      templates.set(op, t);
      expectations[op](t);
      const { pending: _p, ...afterState } = t.after;
      const { pending: _q, ...beforeState } = t.before;
      // POINTS kills: random fault points (every one when there are fewer), then kills after
      // random delays for the rest.
      const points = Array.from({ length: t.calls }, (_, i) => i + 1).sort(() => Math.random() - 0.5);
      const POINTS = pointsFor(op);
      const kills: Array<{ killAt: number; delay?: number }> = points.slice(0, POINTS).map((killAt) => ({ killAt }));
      while (kills.length < POINTS) kills.push({ killAt: 0, delay: Math.floor(Math.random() * t.ms) });
      const one = async (kill: { killAt: number; delay?: number }) => {
        const dir = await makeTempRoot(`rk-fo-${op}-k-`);
        await cp(t.dir, dir, { recursive: true });
        const outcome = await runCrashChild(command, { dir, op, killAt: kill.killAt }, kill.delay);
        const what = `${op} killed at ${kill.delay === undefined ? `point ${kill.killAt}` : `${kill.delay} ms`}`;
        if (kill.delay === undefined) expect(outcome.signal, `${what}: ${outcome.stderr}`).toBe('SIGKILL');
        await checkNeverBetween(dir);
        const { failover, replication } = worldEngines(dir);
        await failover.resume(worldJob(dir));
        await replication.close();
        const { pending, ...now } = await observe(dir);
        expect(pending, what).toBe(false);
        if (op === 'test') expect(now, what).toEqual(beforeState);
        else expect([beforeState, afterState], what).toContainEqual(now);
      };
      // Kills are independent (each on its own copy): a few at a time.
      for (let i = 0; i < kills.length; i += 3) await Promise.all(kills.slice(i, i + 3).map(one));
      expect(kills.length).toBe(POINTS);
    }, 240_000);
  }
});
