import { spawn } from 'node:child_process';
import { createHash, randomInt } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  DriverRegistry,
  FailoverEngine,
  FileFailoverStore,
  FileStateStore,
  type JobSpecInput,
  parseJob,
  ReplicationEngine,
} from '@replikit/core';
import { testPattern } from '@replikit/core/testing';
import { localTransport } from '@replikit/transport';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { xenDriver } from '../src/index.js';
import { prepareEngineChild } from './helpers/engine-child-runner.js';
import { PASSWORD_ENV, startPool } from './helpers/xen-pool.js';

/*
 * Issue 19, crash safety of the Xen failover operations: test, planned and unplanned failover,
 * undo, commit, permanent failover, reverse replication and failback each run in a child process that SIGKILLs itself at its
 * n-th fault point (the engine's journaled steps and the Xen driver's own steps, counted
 * together; a calibration run lists them). Every kill gets a world of its own (a simulated pool,
 * a replicated VM, brought to the operation's before-state). At the kill, a running replica is one
 * marked failed over (or being promoted) whose last run completed, never one a run is writing,
 * and an unmarked replica cannot start. The parent then resumes the operation and compares the
 * world with the operation's before- and after-state (a clean run in its own world): failover
 * state, replica power, start blocked, marks, replica and source digests, source power, the
 * operations the failover journal recorded as succeeded (so exactly one, or none), and the pool's
 * objects (VMs, snapshots, VDIs, VBDs, test clones) counted, so nothing is orphaned (probe
 * snapshots, appliance VBDs, pending VDIs). Reverse and failback start from a planned failover
 * whose promoted replica's guest wrote a block, and whose original's guest wrote one after it.
 *
 * Kills per operation: see pointsFor (REPLIKIT_XEN_FAILOVER_CRASH_POINTS=<n> gives each max(n, 10));
 * REPLIKIT_CRASH_POINTS caps them (CI's Node 22/24 shard). The points are drawn with
 * REPLIKIT_XEN_FAILOVER_CRASH_SEED (printed); REPLIKIT_XEN_CRASH_TRACE=1 traces the kills.
 */

type Op = 'test' | 'planned' | 'unplanned' | 'undo' | 'commit' | 'permanent' | 'reverse' | 'failback';
const OPS: readonly Op[] = ['test', 'planned', 'unplanned', 'undo', 'commit', 'permanent', 'reverse', 'failback'];

const MiB = 1024 * 1024;
const FROM_ENV = Number(process.env.REPLIKIT_XEN_FAILOVER_CRASH_POINTS ?? 0);
const CAP = Number(process.env.REPLIKIT_CRASH_POINTS ?? 0);
/**
 * Each kill costs a world (a VM replicated once) and a child process: ~5-8 s on the loaded 2-core
 * machine (planned ~13 s, reverse and failback 15-30 s), so the default is 2 kills for the
 * multi-step operations and 1 for the others (the file measured 268 s there, with the two
 * targeted kills below); REPLIKIT_XEN_FAILOVER_CRASH_POINTS=10 runs the 10 per operation
 * (measured per operation, loaded: test 91 s, planned 223 s, unplanned 54 s, undo 51 s, commit
 * 156 s, permanent 42 s, reverse 121-386 s, failback 270 s).
 */
const MULTI_STEP: ReadonlySet<Op> = new Set(['planned', 'unplanned', 'undo', 'reverse', 'failback']);
const pointsFor = (op: Op): number => {
  const points = FROM_ENV > 0 ? Math.max(10, FROM_ENV) : MULTI_STEP.has(op) ? 2 : 1;
  return CAP > 0 ? Math.min(CAP, points) : points;
};
const SEED = Number(process.env.REPLIKIT_XEN_FAILOVER_CRASH_SEED ?? randomInt(2 ** 31));
const trace = (what: string) => {
  if (process.env.REPLIKIT_XEN_CRASH_TRACE) process.stderr.write(`${new Date().toISOString()} ${what}\n`);
};
const here = dirname(fileURLToPath(import.meta.url));
const childSource = join(here, 'helpers', 'failover-child.ts');
const repoRoot = resolve(here, '../../..');

/** A world in an operation's before-state, on a pool of its own. */
interface World {
  stateDir: string;
  jobInput: JobSpecInput;
  observe(): Promise<Observed>;
  /** At a kill: a running replica is failed over and complete; an unmarked one cannot start. */
  checkNeverBetween(what: string): Promise<void>;
  resume(): Promise<void>;
  close(): Promise<void>;
}

/** What tells a before-state from an after-state (no ids: each world has its own). */
interface Observed {
  state: string;
  pending: boolean;
  replicaPower: string;
  startBlocked: boolean;
  /** `replikit:failover`'s state, `retired` for a retired replica, `''` for a plain replica. */
  failover: string;
  /** `replikit:mark` (`ready` / in progress), `''` once retired. */
  mark: string;
  /** A run's or the failover's hold (`replikit:owner`) is on the replica: none once an operation ended. */
  held: boolean;
  replicaDigest: string;
  sourceDigest: string;
  sourcePower: string;
  /** Operations of the kind under test the failover journal recorded as succeeded. */
  completed: number;
  vms: number;
  snapshots: number;
  vdis: number;
  vbds: number;
  clones: number;
}

type XRecord = Record<string, unknown>;

/** The pool of one operation's kills (each kill's world has its own VM, job and replica on it). */
type Pool = Awaited<ReturnType<typeof startPool>>;

/** sha256 of a VM's disks in userdevice order, read from the simulator's files (any VM, replica or not). */
async function vmDigest(pool: Pool, vmRef: string): Promise<string> {
  const disks: Array<{ device: string; vdi: string }> = [];
  for (const vbd of await pool.call<string[]>('VM.get_VBDs', vmRef)) {
    if ((await pool.call<string>('VBD.get_type', vbd)) !== 'Disk') continue;
    disks.push({
      device: await pool.call<string>('VBD.get_userdevice', vbd),
      vdi: await pool.call<string>('VBD.get_VDI', vbd),
    });
  }
  const hash = createHash('sha256');
  for (const { vdi } of disks.sort((a, b) => a.device.localeCompare(b.device))) {
    const size = Number(await pool.call<string>('VDI.get_virtual_size', vdi));
    const bytes = new Uint8Array(size);
    bytes.set((await readFile(pool.sim.vdiPath(vdi))).subarray(0, size));
    hash.update(bytes);
  }
  return hash.digest('hex');
}

/** The pool's VMs (not snapshots), snapshots and VDIs, counted. */
async function poolCounts(pool: Pool) {
  const vms = Object.values(await pool.call<Record<string, XRecord>>('VM.get_all_records')).filter(
    (v) => v.is_control_domain !== true && v.is_a_template !== true,
  );
  return {
    vms: vms.filter((v) => v.is_a_snapshot !== true).length,
    snapshots: vms.filter((v) => v.is_a_snapshot === true).length,
    vdis: Object.keys(await pool.call<Record<string, XRecord>>('VDI.get_all_records')).length,
    vbds: Object.keys(await pool.call<Record<string, XRecord>>('VBD.get_all_records')).length,
  };
}

async function makeWorld(pool: Pool, op: Op, n: number, dir: string): Promise<World> {
  const stateDir = join(dir, `state-${n}`);
  const vm = await pool.makeVM(`web-${n}`, [MiB, MiB / 2]);
  const hv = await pool.driver();
  const guestWrite = async (seed: number) => {
    for (const [i, disk] of (await hv.getVM(vm.uuid)).disks.entries()) {
      await pool.writeGuest(vm.uuid, disk.id, 4096 * (seed + i), testPattern(seed, 9000));
    }
  };
  await guestWrite(3);
  const endpoint = { driver: 'xen', url: pool.sim.url, passwordEnv: PASSWORD_ENV };
  const jobInput = {
    name: `web-dr-${n}`,
    source: { ...endpoint, vm: `web-${n}` },
    target: { ...endpoint, replicaName: `web-${n}-dr` },
    method: 'cbt',
  } as JobSpecInput;
  const job = parseJob(jobInput);
  const drivers = new DriverRegistry().register(xenDriver);
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
  const replicaRef = await pool.call<string>('VM.get_by_uuid', replica.id);
  if (op === 'planned') await guestWrite(7);
  if (op === 'undo' || op === 'commit' || op === 'permanent') {
    await failover.unplanned(job, { force: true });
    for (const vbd of await pool.call<string[]>('VM.get_VBDs', replicaRef)) {
      if ((await pool.call<string>('VBD.get_userdevice', vbd)) !== '0') continue;
      const vdi = await pool.call<string>('VDI.get_uuid', await pool.call<string>('VBD.get_VDI', vbd));
      await pool.writeGuest(replica.id, vdi, 0, new Uint8Array(30_000).fill(0xab));
    }
  }
  if (op === 'permanent') await failover.commit(job);
  if (op === 'reverse' || op === 'failback') {
    await failover.planned(job, { shutdownTimeoutMs: 60_000 });
    const onDevice = async (vmRef: string, vmUuid: string, offset: number, fill: number) => {
      for (const vbd of await pool.call<string[]>('VM.get_VBDs', vmRef)) {
        if ((await pool.call<string>('VBD.get_userdevice', vbd)) !== '0') continue;
        const vdi = await pool.call<string>('VDI.get_uuid', await pool.call<string>('VBD.get_VDI', vbd));
        await pool.writeGuest(vmUuid, vdi, offset, new Uint8Array(30_000).fill(fill));
      }
    };
    // The promoted replica's guest writes; the original's guest runs for a moment after its last snapshot.
    await onDevice(replicaRef, replica.id, 0, 0xab);
    await pool.call('VM.start', vm.ref, false, false);
    await onDevice(vm.ref, vm.uuid, 200_000, 0xcd);
    await pool.call('VM.hard_shutdown', vm.ref);
  }
  // Objects are counted from here on: what the operation adds or leaves behind.
  const base = await poolCounts(pool);

  const configOf = () => pool.call<Record<string, string>>('VM.get_other_config', replicaRef);
  const failoverOf = (config: Record<string, string>) =>
    config['replikit:retired-replica'] !== undefined
      ? 'retired'
      : config['replikit:failover']
        ? (JSON.parse(config['replikit:failover']) as { state: string }).state
        : '';
  return {
    stateDir,
    jobInput,
    async observe() {
      const record = await failover.status(job);
      const config = await configOf();
      const counts = await poolCounts(pool);
      return {
        state: record.state,
        pending: record.operation !== undefined,
        replicaPower: await pool.call<string>('VM.get_power_state', replicaRef),
        startBlocked: 'start' in (await pool.call<Record<string, string>>('VM.get_blocked_operations', replicaRef)),
        failover: failoverOf(config),
        mark: config['replikit:mark'] ?? '',
        held: config['replikit:owner'] !== undefined,
        replicaDigest: await vmDigest(pool, replicaRef),
        sourceDigest: await vmDigest(pool, vm.ref),
        sourcePower: await pool.call<string>('VM.get_power_state', vm.ref),
        completed: record.history.filter((h) => h.kind === op && h.outcome === 'succeeded').length,
        vms: counts.vms - base.vms,
        snapshots: counts.snapshots - base.snapshots,
        vdis: counts.vdis - base.vdis,
        vbds: counts.vbds - base.vbds,
        clones: Object.values(await pool.call<Record<string, XRecord>>('VM.get_all_records')).filter(
          (v) => typeof v.other_config === 'object' && 'replikit:clone' in (v.other_config as object),
        ).length,
      };
    },
    async checkNeverBetween(what) {
      const config = await configOf();
      const marked = failoverOf(config);
      if ((await pool.call<string>('VM.get_power_state', replicaRef)) === 'Running' && marked !== 'retired') {
        expect(['promoting', 'promoted', 'committed'], `${what}: a running replica`).toContain(marked);
        expect(config['replikit:mark'], `${what}: a running replica's last run`).toBe('ready');
      }
      if (marked === '') {
        const blocked = await pool.call<Record<string, string>>('VM.get_blocked_operations', replicaRef);
        expect(Object.keys(blocked), `${what}: an unmarked replica`).toContain('start');
      }
    },
    async resume() {
      await failover.resume(job);
    },
    async close() {
      await replication.close();
      await hv.close();
    },
  };
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
    expect(before).toMatchObject({ state: 'ready', sourcePower: 'Running', replicaPower: 'Halted', failover: '' });
    expect(after).toMatchObject({ state: 'failed-over', sourcePower: 'Halted', replicaPower: 'Running' });
    expect(after).toMatchObject({ failover: 'promoted', startBlocked: false });
    expect(after.replicaDigest).not.toBe(before.replicaDigest); // the writes after the last run came over
  },
  unplanned: (before, after) => {
    expect(before).toMatchObject({ state: 'ready', replicaPower: 'Halted', failover: '', startBlocked: true });
    expect(after).toMatchObject({ state: 'failed-over', replicaPower: 'Running', failover: 'promoted' });
    expect(after).toMatchObject({ startBlocked: false, replicaDigest: before.replicaDigest, vdis: before.vdis });
  },
  undo: (before, after) => {
    expect(before).toMatchObject({ state: 'failed-over', replicaPower: 'Running', failover: 'promoted' });
    expect(after).toMatchObject({ state: 'ready', replicaPower: 'Halted', failover: '', startBlocked: true });
    expect(after.replicaDigest).not.toBe(before.replicaDigest); // the replica's own write is gone
  },
  commit: (before, after) => {
    expect(before).toMatchObject({ state: 'failed-over', failover: 'promoted' });
    expect(after).toMatchObject({ ...before, state: 'committed', failover: 'committed', completed: 1 });
  },
  permanent: (before, after) => {
    expect(before).toMatchObject({ state: 'committed', failover: 'committed' });
    expect(after).toMatchObject({ state: 'retired', failover: 'retired', replicaPower: 'Running', mark: '' });
  },
  reverse: (before, after) => {
    expect(before).toMatchObject({ state: 'failed-over', replicaPower: 'Running', sourcePower: 'Halted' });
    expect(before.sourceDigest).not.toBe(before.replicaDigest);
    // The original now equals the promoted replica, which keeps running untouched.
    expect(after).toMatchObject({ ...before, sourceDigest: before.replicaDigest, completed: 1 });
  },
  failback: (before, after) => {
    expect(before).toMatchObject({ state: 'failed-over', replicaPower: 'Running', sourcePower: 'Halted' });
    expect(after).toMatchObject({ state: 'ready', failover: '', mark: 'ready', startBlocked: true, completed: 1 });
    expect(after).toMatchObject({ replicaPower: 'Halted', sourcePower: 'Running' });
    // The original runs on the promoted replica's disks; the failback's forward run made them a restore point.
    expect(after).toMatchObject({ sourceDigest: before.replicaDigest, replicaDigest: before.replicaDigest });
    // Its forward run replaced the original's snapshot: no VM, snapshot or VBD more than before.
    expect(after).toMatchObject({ vms: 0, snapshots: before.snapshots, vbds: 0, clones: 0 });
  },
};

describe('SIGKILL anywhere in a xen failover operation, then resume: before- or after-state', () => {
  let command: string[];
  let work: string;
  let files = 0;
  beforeAll(async () => {
    console.info(`xen failover crash: seed ${SEED} (REPLIKIT_XEN_FAILOVER_CRASH_SEED=${SEED} repeats it)`);
    work = await mkdtemp(join(tmpdir(), 'rk-xen-fo-crash-'));
    command = await prepareEngineChild(work, childSource);
  }, 120_000);
  const pools: Pool[] = [];
  afterEach(async () => {
    for (const pool of pools.splice(0)) await pool.close();
  });
  afterAll(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  for (const [index, op] of OPS.entries()) {
    it(`${op}: ${pointsFor(op)} kills at seeded fault points, each resumed`, async () => {
      const draw = drawer(SEED + index);
      // The clean run: the operation's fault points, before- and after-state.
      const pool = await startPool();
      const dir = await mkdtemp(join(work, `${op}-`));
      pools.push(pool);
      let n = 0;
      const clean = await makeWorld(pool, op, n++, dir);
      let before: Observed;
      let after: Observed;
      let hits: number;
      try {
        before = await clean.observe();
        const run = await runChild(
          command,
          { stateDir: clean.stateDir, job: clean.jobInput, op },
          join(work, `r${files++}.json`),
        );
        expect(run.out, run.err).toContain('result ok');
        after = await clean.observe();
        hits = run.points.length;
        trace(`${op}: ${hits} fault points: ${run.points.join(' ')}`);
      } finally {
        await clean.close();
      }
      expectations[op](before, after);
      const { pending: _b, ...beforeState } = before;
      const { pending: _a, ...afterState } = after;

      const kills = chooseHits(hits, pointsFor(op), draw);
      for (const hit of kills) {
        const w = await makeWorld(pool, op, n++, dir);
        try {
          const { pending: _w, ...own } = await w.observe();
          expect(own, `${op}: a world's before-state`).toEqual(beforeState);
          trace(`${op}: kill at fault point ${hit}`);
          const killed = await runChild(
            command,
            { stateDir: w.stateDir, job: w.jobInput, op, killAtHit: hit },
            join(work, `r${files++}.json`),
          );
          const what = `${op} killed at fault point ${hit} (${killed.points.at(-1)})`;
          expect(killed.signal, `${what}: ${killed.err}`).toBe('SIGKILL');
          await w.checkNeverBetween(what);
          await w.resume();
          const { pending, ...now } = await w.observe();
          expect(pending, what).toBe(false);
          if (op === 'test') expect({ ...now, completed: 0 }, what).toEqual(beforeState);
          else expect([beforeState, afterState], what).toContainEqual(now);
        } finally {
          await w.close();
        }
      }
    }, 600_000);
  }

  // A kill after the replica's failover mark was written (promote) or dropped (demote) and before
  // the failover's hold was: the resumed hook saw its work done and returned early, leaving the
  // hold of a dead process; failback's forward run was then refused (E_CONFLICT, held by
  // failover-<uuid>), and a promoted replica kept a hold no operation would drop.
  const marks = [
    { op: 'failback', point: 'demote:unmarked' },
    { op: 'planned', point: 'promote:marked' },
  ] as const;
  for (const { op, point } of marks) {
    it(`${op} killed at ${point}: the resume ends it in its after-state, with no hold left on the replica`, async () => {
      const pool = await startPool();
      pools.push(pool);
      const dir = await mkdtemp(join(work, `${op}-mark-`));
      const w = await makeWorld(pool, op, 0, dir);
      try {
        const killed = await runChild(
          command,
          { stateDir: w.stateDir, job: w.jobInput, op, killAt: point },
          join(work, `r${files++}.json`),
        );
        expect(killed.signal, killed.err).toBe('SIGKILL');
        expect(killed.points.at(-1)).toBe(point);
        await w.resume();
        const now = await w.observe();
        expect(now).toMatchObject({ pending: false, held: false, completed: 1 });
        expect(now.state).toBe(op === 'failback' ? 'ready' : 'failed-over');
      } finally {
        await w.close();
      }
    }, 300_000);
  }
});
