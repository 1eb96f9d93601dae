import { spawn } from 'node:child_process';
import { createHash, randomInt } from 'node:crypto';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  DriverRegistry,
  defineDriver,
  FailoverEngine,
  FileFailoverStore,
  FileStateStore,
  type Hypervisor,
  type JobSpecInput,
  parseJob,
  ReplicationEngine,
} from '@replikit/core';
import { testPattern } from '@replikit/core/testing';
import { localTransport } from '@replikit/transport';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
// The Xen crash checks' child runner bundles a child script once (plain node then starts it in a
// fraction of a second, where tsx compiles the workspace at every start).
import { prepareEngineChild } from '../../driver-xen/test/helpers/engine-child-runner.js';
import { HYPERV_KIND_CAPABILITIES, HyperVDriver, hypervDriverOptionsSchema } from '../src/index.js';
import { type SimHost, startSimHost } from './helpers/sim-host.js';

/*
 * Issue 19, crash safety of the Hyper-V failover operations on the simulated host: test, planned
 * and unplanned failover, undo, commit, permanent failover, reverse replication and failback each
 * run in a child process that
 * SIGKILLs itself at its n-th fault point (the engine's journaled steps and the driver's failover
 * steps, counted together; a clean run lists them). Every kill gets a world of its own (a source
 * VM replicated once, brought to the operation's before-state). At the kill, a running replica is
 * one failed over (or being promoted) and marked ready, never one a run is writing. The parent
 * then resumes the operation and compares the world with the operation's before- and after-state
 * (the clean run's): failover state, powers, marks, the replica's hold, the replica's and the
 * original's live digests, the operations of that kind the failover journal recorded as succeeded
 * (none or exactly one), and the host's VMs, checkpoints, VHDX files, clones and clone folders
 * counted, so nothing is orphaned. Reverse and failback start from a planned failover whose
 * promoted replica's guest wrote a block and whose original's guest wrote one after its last
 * checkpoint; after them the original equals the promoted replica (digest).
 *
 * Kills per operation: 1 so CI stays quick (each kill costs a world and a child with its own fake
 * pwsh: the file took 12 min with 1-2 kills per operation started through tsx on the loaded
 * machine; reverse and failback take 25-40 s a kill there, and 10 each with seed 481162413 took
 * 347 s and 316 s, every kill resumed into the before- or after-state);
 * REPLIKIT_HYPERV_FAILOVER_CRASH_POINTS=<n> gives each max(n, 10); REPLIKIT_CRASH_POINTS caps
 * them. The points are drawn with REPLIKIT_HYPERV_FAILOVER_CRASH_SEED (printed);
 * REPLIKIT_HYPERV_CRASH_TRACE=1 traces the fault points, the clean states and the kills.
 */

type Op = 'test' | 'planned' | 'unplanned' | 'undo' | 'commit' | 'permanent' | 'reverse' | 'failback';
const OPS: readonly Op[] = ['test', 'planned', 'unplanned', 'undo', 'commit', 'permanent', 'reverse', 'failback'];
const MiB = 2 ** 20;
const FROM_ENV = Number(process.env.REPLIKIT_HYPERV_FAILOVER_CRASH_POINTS ?? 0);
const CAP = Number(process.env.REPLIKIT_CRASH_POINTS ?? 0);
const pointsFor = (_op: Op): number => {
  const points = FROM_ENV > 0 ? Math.max(10, FROM_ENV) : 1;
  return CAP > 0 ? Math.min(CAP, points) : points;
};
const SEED = Number(process.env.REPLIKIT_HYPERV_FAILOVER_CRASH_SEED ?? randomInt(2 ** 31));
const trace = (what: string) => {
  if (process.env.REPLIKIT_HYPERV_CRASH_TRACE) process.stderr.write(`${new Date().toISOString()} ${what}\n`);
};
const here = dirname(fileURLToPath(import.meta.url));
const childSource = join(here, 'helpers', 'failover-child.ts');
const repoRoot = resolve(here, '../../..');

/** What tells a before-state from an after-state (no ids: each world has its own). */
interface Observed {
  state: string;
  pending: boolean;
  replicaPower: string;
  /** The driver's failover mark, `retired` once retired. */
  failover: string;
  /** The replica's run mark, `''` once retired. */
  mark: string;
  /** A run's or the failover's hold is on the replica: none once an operation ended. */
  held: boolean;
  replicaDigest: string;
  /** The original (source) VM's live digest. */
  sourceDigest: string;
  sourcePower: string;
  /** Operations of the kind under test the failover journal recorded as succeeded. */
  completed: number;
  vms: number;
  checkpoints: number;
  /** `.vhdx` and `.avhdx` files under the host's folder. */
  vhdx: number;
  clones: number;
  cloneFolders: number;
}

/** sha256 of every disk of a VM as it is now (its live chain). */
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

/** The `.vhdx` and `.avhdx` files under `dir`, counted. */
async function countVhdx(dir: string): Promise<number> {
  const entries = await readdir(dir, { recursive: true });
  return entries.filter((e) => /\.a?vhdx$/i.test(e)).length;
}

/** Runs the child on `request`: how it ended and the fault points it printed. */
async function runChild(command: string[], request: Record<string, unknown>, file: string) {
  await writeFile(file, JSON.stringify(request));
  const child = spawn(command[0]!, [...command.slice(1), file], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => {
    out += c;
  });
  child.stderr.setEncoding('utf8').on('data', (c: string) => {
    err += c;
  });
  const signal = await new Promise<NodeJS.Signals | null>((done, fail) => {
    child.on('error', fail);
    child.on('close', (_code, sig) => done(sig));
  });
  const points = out
    .split('\n')
    .filter((l) => l.startsWith('point '))
    .map((l) => l.slice(6));
  return { signal, points, out, err };
}

/** Seeded draw (an LCG): the same seed repeats the same kills. */
function drawer(seed: number) {
  let x = seed >>> 0;
  return (n: number) => {
    x = (Math.imul(x, 1_103_515_245) + 12_345) >>> 0;
    return Math.floor((x / 2 ** 32) * n);
  };
}

/** `count` hit numbers in 1..`hits`: every one in a seeded order, again as often as needed. */
function chooseHits(hits: number, count: number, draw: (n: number) => number): number[] {
  const chosen: number[] = [];
  while (chosen.length < count) {
    const deck = Array.from({ length: hits }, (_, i) => i + 1);
    for (let i = deck.length - 1; i > 0; i--) {
      const j = draw(i + 1);
      [deck[i], deck[j]] = [deck[j]!, deck[i]!];
    }
    chosen.push(...deck.slice(0, count - chosen.length));
  }
  return chosen;
}

/** Each operation's after-state, checked on the clean run before any kill. */
const expectations: Record<Op, (before: Observed, after: Observed) => void> = {
  test: (before, after) => expect(after).toEqual({ ...before, completed: 1 }),
  planned: (before, after) => {
    expect(before).toMatchObject({
      state: 'ready',
      sourcePower: 'running',
      replicaPower: 'stopped',
      failover: 'replica',
    });
    expect(after).toMatchObject({ state: 'failed-over', sourcePower: 'stopped', replicaPower: 'running' });
    expect(after).toMatchObject({ failover: 'promoted', mark: 'ready' });
    expect(after.replicaDigest).not.toBe(before.replicaDigest); // the writes after the last run came over
  },
  unplanned: (before, after) => {
    expect(before).toMatchObject({ state: 'ready', replicaPower: 'stopped', failover: 'replica' });
    expect(after).toMatchObject({ state: 'failed-over', replicaPower: 'running', failover: 'promoted' });
    expect(after).toMatchObject({ replicaDigest: before.replicaDigest, checkpoints: before.checkpoints });
  },
  undo: (before, after) => {
    expect(before).toMatchObject({ state: 'failed-over', replicaPower: 'running', failover: 'promoted' });
    expect(after).toMatchObject({ state: 'ready', replicaPower: 'stopped', failover: 'replica', mark: 'ready' });
    expect(after.replicaDigest).not.toBe(before.replicaDigest); // the replica's own write is gone
  },
  commit: (before, after) => {
    expect(before).toMatchObject({ state: 'failed-over', failover: 'promoted' });
    expect(after).toMatchObject({ ...before, state: 'committed', failover: 'committed', completed: 1 });
  },
  permanent: (before, after) => {
    expect(before).toMatchObject({ state: 'committed', failover: 'committed' });
    expect(after).toMatchObject({ state: 'retired', failover: 'retired', replicaPower: 'running', mark: '' });
  },
  reverse: (before, after) => {
    expect(before).toMatchObject({ state: 'failed-over', replicaPower: 'running', sourcePower: 'stopped' });
    expect(before.sourceDigest).not.toBe(before.replicaDigest);
    // The original now equals the promoted replica, which keeps running untouched.
    expect(after).toEqual({ ...before, sourceDigest: before.replicaDigest, completed: 1 });
  },
  failback: (before, after) => {
    expect(before).toMatchObject({ state: 'failed-over', replicaPower: 'running', sourcePower: 'stopped' });
    expect(after).toMatchObject({ state: 'ready', failover: 'replica', mark: 'ready', held: false, completed: 1 });
    expect(after).toMatchObject({ replicaPower: 'stopped', sourcePower: 'running' });
    // The original runs on the promoted replica's disks; the failback's forward run made them a restore point.
    expect(after).toMatchObject({ sourceDigest: before.replicaDigest, replicaDigest: before.replicaDigest });
    expect(after).toMatchObject({ vms: 0, clones: 0, cloneFolders: 0 });
  },
};

describe('SIGKILL anywhere in a hyperv failover operation, then resume: before- or after-state', () => {
  let sim: SimHost;
  let work: string;
  let command: string[];
  let files = 0;
  let serial = 0;
  beforeAll(async () => {
    console.info(`hyperv failover crash: seed ${SEED} (REPLIKIT_HYPERV_FAILOVER_CRASH_SEED=${SEED} repeats it)`);
    sim = await startSimHost();
    work = await mkdtemp(join(tmpdir(), 'rk-hyperv-fo-crash-'));
    command = await prepareEngineChild(work, childSource);
  }, 120_000);
  afterAll(async () => {
    await sim?.close();
    if (work) await rm(work, { recursive: true, force: true });
  });

  /** A world in the before-state of `op`: its own source VM, job, state and replica. */
  async function makeWorld(op: Op) {
    const n = ++serial;
    const name = `web-${n}`;
    const stateDir = join(work, `state-${n}`);
    const replicaPath = join(sim.host.root, 'replicas');
    await sim.makeVM(name, [MiB, MiB / 2]);
    const hv = sim.sharedDriver();
    const guestWrite = async (seed: number) => {
      await sim.host.guestWrite(name, 0, 4096 * seed, testPattern(seed, 9000));
      await sim.host.guestWrite(name, 1, 4096 * (seed + 1), testPattern(seed + 1, 9000));
    };
    await hv.power(name, 'start');
    await guestWrite(3);
    const jobInput = {
      name: `${name}-dr`,
      source: { driver: 'hyperv', vm: name },
      target: { driver: 'hyperv', replicaPath, replicaName: `${name}-dr` },
      method: 'cbt',
    } as JobSpecInput;
    const job = parseJob(jobInput);
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
            target: { replicaPath: options.replicaPath, onWarning: () => undefined },
          }),
      }),
    );
    const stateStore = new FileStateStore(stateDir);
    const replication = new ReplicationEngine({ stateStore, drivers, ruleSets: [], transport: localTransport() });
    const failover = new FailoverEngine({
      stateStore,
      failoverStore: new FileFailoverStore(stateDir),
      drivers,
      replication,
    });
    const run = await replication.run(job);
    expect(run.outcome, JSON.stringify(run.error)).toBe('completed');
    const replica = run.replica!;
    const replicaName = (await hv.getVM(replica.id)).name;
    if (op === 'planned') await guestWrite(7);
    if (op === 'unplanned') await hv.power(name, 'shutdown');
    if (op === 'undo' || op === 'commit' || op === 'permanent') {
      await failover.unplanned(job, { force: true });
      await sim.host.guestWrite(replicaName, 0, 0, new Uint8Array(30_000).fill(0xab));
    }
    if (op === 'permanent') await failover.commit(job);
    if (op === 'reverse' || op === 'failback') {
      await failover.planned(job, { shutdownTimeoutMs: 60_000 });
      // The promoted replica's guest writes; the original's guest runs for a moment after its last checkpoint.
      await sim.host.guestWrite(replicaName, 0, 0, new Uint8Array(30_000).fill(0xab));
      await hv.power(name, 'start');
      await sim.host.guestWrite(name, 0, 200_000, new Uint8Array(30_000).fill(0xcd));
      await hv.power(name, 'shutdown');
    }
    const count = async () => {
      const host = await sim.host.state();
      const folders = (await readdir(replicaPath)).filter((f) => f.startsWith('replikit-clone-')).length;
      return {
        vms: host.vms.length,
        checkpoints: (host.snapshots ?? []).length,
        cloneFolders: folders,
        vhdx: await countVhdx(sim.host.root),
      };
    };
    const base = await count();
    const observe = async (): Promise<Observed> => {
      const record = await failover.status(job);
      const mark = await hv.failoverMark!(replica).then(
        (m) => m.state as string,
        () => 'retired',
      );
      const counts = await count();
      return {
        state: record.state,
        pending: record.operation !== undefined,
        replicaPower: (await hv.getVM(replica.id)).powerState,
        failover: mark,
        mark: mark === 'retired' ? '' : await hv.replicaMark(replica),
        held: mark === 'retired' ? false : (await hv.replicaOwner(replica)) !== undefined,
        replicaDigest: await liveDigest(hv, replica.id),
        sourceDigest: await liveDigest(hv, name),
        sourcePower: (await hv.getVM(name)).powerState,
        completed: record.history.filter((h) => h.kind === op && h.outcome === 'succeeded').length,
        vms: counts.vms - base.vms,
        checkpoints: counts.checkpoints - base.checkpoints,
        vhdx: counts.vhdx - base.vhdx,
        clones: (await hv.listClones!()).length,
        cloneFolders: counts.cloneFolders - base.cloneFolders,
      };
    };
    return {
      stateDir,
      jobInput,
      observe,
      /** At a kill: a running replica is failed over and marked ready. */
      async checkNeverBetween(what: string) {
        const now = await observe();
        if (now.replicaPower === 'running' && now.failover !== 'retired') {
          expect(['promoted', 'committed'], `${what}: a running replica`).toContain(now.failover);
          expect(now.mark, `${what}: a running replica's mark`).toBe('ready');
        }
      },
      resume: () => failover.resume(job),
      close: () => replication.close(),
    };
  }

  for (const [index, op] of OPS.entries()) {
    it(`${op}: ${pointsFor(op)} kills at seeded fault points, each resumed`, async () => {
      const draw = drawer(SEED + index);
      const clean = await makeWorld(op);
      let before: Observed;
      let after: Observed;
      let hits: number;
      try {
        before = await clean.observe();
        const run = await runChild(
          command,
          { pwsh: sim.host.pwsh, stateDir: clean.stateDir, job: clean.jobInput, op },
          join(work, `r${files++}.json`),
        );
        expect(run.out, run.err).toContain('result ok');
        after = await clean.observe();
        hits = run.points.length;
        trace(`${op}: ${hits} fault points: ${run.points.join(' ')}`);
        trace(`${op}: before ${JSON.stringify(before)}`);
        trace(`${op}: after ${JSON.stringify(after)}`);
      } finally {
        await clean.close();
      }
      expectations[op](before, after);
      const { pending: _b, ...beforeState } = before;
      const { pending: _a, ...afterState } = after;
      for (const hit of chooseHits(hits, pointsFor(op), draw)) {
        const w = await makeWorld(op);
        try {
          const ownBefore = await w.observe();
          {
            const { replicaDigest: _x, sourceDigest: _y, pending: _p, ...shape } = ownBefore;
            const { replicaDigest: _u, sourceDigest: _v, ...expected } = beforeState;
            expect(shape, `${op}: a world's before-state`).toEqual(expected);
          }
          const killed = await runChild(
            command,
            { pwsh: sim.host.pwsh, stateDir: w.stateDir, job: w.jobInput, op, killAtHit: hit },
            join(work, `r${files++}.json`),
          );
          const what = `${op} killed at fault point ${hit} (${killed.points.at(-1)})`;
          trace(what);
          expect(killed.signal, `${what}: ${killed.err}`).toBe('SIGKILL');
          await w.checkNeverBetween(what);
          await w.resume();
          const { pending, ...now } = await w.observe();
          expect(pending, what).toBe(false);
          const { replicaDigest: _d, sourceDigest: _s, ...shape } = now;
          if (op === 'test') expect({ ...now, completed: 0 }, what).toEqual(beforeState);
          else if (op === 'reverse' || op === 'failback') {
            // This world's own digests: the original ends equal to the promoted replica, or as it was.
            const { pending: _o, ...own } = ownBefore;
            const ownAfter = { ...afterState, replicaDigest: own.replicaDigest, sourceDigest: own.replicaDigest };
            expect([own, ownAfter], what).toContainEqual(now);
          } else {
            // Digests differ between worlds (each source has its own data only where the ops write
            // nothing): the shape is compared with both states, the digest with this world's own.
            const states = [beforeState, afterState].map(({ replicaDigest: _x, sourceDigest: _y, ...s }) => s);
            expect(states, what).toContainEqual(shape);
          }
        } finally {
          await w.close();
        }
      }
    }, 600_000);
  }

  /** Runs `op` in a child killed at fault point `point` (and checks that it was), resumes it, and observes the world. */
  async function killAtThenResume(w: Awaited<ReturnType<typeof makeWorld>>, op: Op, point: string) {
    const killed = await runChild(
      command,
      { pwsh: sim.host.pwsh, stateDir: w.stateDir, job: w.jobInput, op, killAt: point },
      join(work, `r${files++}.json`),
    );
    expect(killed.signal, killed.err).toBe('SIGKILL');
    expect(killed.points.at(-1)).toBe(point);
    await w.resume();
    return w.observe();
  }

  // A kill while a reverse pass replaced the original's live file (its new file complete, not yet
  // renamed over the old one): the resumed pass wrote a new file, and the first one stayed in the
  // original VM's folder, a VHDX no VM used.
  it('reverse killed at live:replacing: the resume ends it in its after-state, with no file left behind', async () => {
    const w = await makeWorld('reverse');
    try {
      const now = await killAtThenResume(w, 'reverse', 'live:replacing');
      expect(now).toMatchObject({ pending: false, held: false, completed: 1, vhdx: 0, sourcePower: 'stopped' });
      expect(now.sourceDigest).toBe(now.replicaDigest);
    } finally {
      await w.close();
    }
  }, 300_000);

  // A planned failover killed after the driver wrote `promoted` but before it left its hold: the
  // resume found the promote done and returned without the hold, which stayed on the replica
  // (CI, seed 312650958, fault point 10).
  it('planned killed at promote:marked: the resume ends it failed over, with the hold released', async () => {
    const w = await makeWorld('planned');
    try {
      expect(await killAtThenResume(w, 'planned', 'promote:marked')).toMatchObject({
        pending: false,
        held: false,
        state: 'failed-over',
        failover: 'promoted',
        replicaPower: 'running',
      });
    } finally {
      await w.close();
    }
  }, 300_000);
});
