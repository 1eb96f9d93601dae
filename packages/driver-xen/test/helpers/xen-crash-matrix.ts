import { createHash } from 'node:crypto';
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileStateStore, isTerminal } from '@replikit/core';
import { readWholeDisk, testPattern } from '@replikit/core/testing';
import { expect } from 'vitest';
import type { XenDriver } from '../../src/index.js';
import { type AbdPool, startAbdPool } from './abd-pool.js';
import { type EngineChildOutcome, prepareEngineChild, startEngineChild } from './engine-child-runner.js';
import { PASSWORD_ENV } from './xen-pool.js';

/*
 * Issue 17, crash safety: the body of the Xen SIGKILL matrices (xen-crash-matrix.test.ts for cbt
 * and abd push, xen-pull-crash-matrix.test.ts for abd pull). The engine runs in a child process
 * against a simulated pool served by this process, and is SIGKILLed at seeded random points of a
 * run (half the points at the Nth XAPI call the pool receives, half after a random delay; both
 * drawn over a calibration run's whole timeline). A new child then resumes the run (every fourth
 * point: rolls it back). After each point the replica equals the source as the run snapshotted
 * it, or the previous version, never a mix; it is ready and XAPI refuses to start it; nothing is
 * plugged into the appliance, the appliance is halted, and no snapshot, pending VDI or stray VBD
 * is left behind (a snapshot of a rolled-back run may arrive after its rollback: the next run
 * deletes it, and a last run checks). REPLIKIT_XEN_CRASH_TRACE=1 prints each step and the XAPI
 * calls before each kill.
 */

/** One matrix: which run is killed, how often, from which seed. */
export interface CrashMatrixSpec {
  /** Names the VM, the job and the replica, and the matrix in its report. */
  readonly name: string;
  readonly method: 'cbt' | 'abd';
  /** `pull`: the target appliance pulls from the source appliance. */
  readonly direction?: 'pull';
  readonly points: number;
  /** The seed the points are drawn from (with `seedOffset` added, so matrices of one seed differ). */
  readonly seed: number;
  readonly seedOffset: number;
}

/** What a matrix made, for the test's `afterEach` to close and remove (also after a failure). */
export interface CrashMatrixHeld {
  pool?: AbdPool;
  xen?: XenDriver;
  dir?: string;
}

const MiB = 1024 * 1024;
const BLOCK = 64 * 1024;
const SIZES = [4 * MiB, 3 * MiB + 512];

/** A small seeded generator (mulberry32): the same seed draws the same points. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

const t0 = performance.now();
const trace = (what: string) => {
  if (process.env.REPLIKIT_XEN_CRASH_TRACE) process.stderr.write(`[${Math.round(performance.now() - t0)}] ${what}\n`);
};
const sha = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex').slice(0, 16);

type XRecords = Record<string, Record<string, unknown>>;
const otherConfig = (r: Record<string, unknown>) => (r.other_config ?? {}) as Record<string, string>;

/** Runs one matrix (see the file comment); fails through `expect` at the first wrong point. */
export async function runCrashMatrix(spec: CrashMatrixSpec, held: CrashMatrixHeld): Promise<void> {
  const random = seeded(spec.seed + spec.seedOffset);
  console.info(`xen crash matrix (${spec.name}): seed ${spec.seed} (REPLIKIT_XEN_CRASH_SEED=${spec.seed} repeats it)`);
  held.pool = await startAbdPool();
  const p = held.pool;
  const dir = await mkdtemp(join(tmpdir(), 'rk-xen-crash-'));
  held.dir = dir;
  const stateDir = join(dir, 'state');
  const command = await prepareEngineChild(dir);
  const hv = await p.driver();
  held.xen = hv;

  // Every XAPI call the pool receives, so that a point can be "the Nth call of the run".
  let calls = 0;
  let onCall: ((n: number) => void) | undefined;
  const original = p.sim.state.call.bind(p.sim.state);
  const recent: string[] = [];
  p.sim.state.call = (name, params) => {
    calls++;
    if (process.env.REPLIKIT_XEN_CRASH_TRACE && onCall) {
      recent.push(`${calls} ${name} ${JSON.stringify(params.slice(1, 3)).slice(0, 120)}`);
      if (recent.length > 12) recent.shift();
    }
    onCall?.(calls);
    return original(name, params);
  };

  const name = `crash ${spec.name}`;
  const vm = await p.makeVM(name, SIZES);
  const vdis = await Promise.all((await hv.getVM(vm.uuid)).disks.map((d) => p.call<string>('VDI.get_by_uuid', d.id)));
  const diskIds = (await hv.getVM(vm.uuid)).disks.map((d) => d.id);
  await p.writeGuest(vm.uuid, diskIds[0]!, 4095, testPattern(1, 300_000));
  await p.writeGuest(vm.uuid, diskIds[1]!, SIZES[1]! - 519, testPattern(2, 519));
  const endpoint = { driver: 'xen', url: p.sim.url, passwordEnv: PASSWORD_ENV, abd: { ips: p.ips } };
  const job = {
    name: `crash-${spec.name}`,
    source: { ...endpoint, vm: name },
    target: { ...endpoint, replicaName: `crash-${spec.name}-replica` },
    method: spec.method,
    ...(spec.direction ? { options: { direction: spec.direction } } : {}),
  };
  const attachedAtStart = await attachedVbds();

  /** The source disks as the guest left them (the run's snapshot will hold exactly this). */
  async function sourceDigests(): Promise<string[]> {
    return Promise.all(
      vdis.map(async (vdi, i) => {
        const bytes = new Uint8Array(SIZES[i]!);
        bytes.set((await readFile(p.sim.vdiPath(vdi))).subarray(0, SIZES[i]!));
        return sha(bytes);
      }),
    );
  }

  async function guestWritesOnePercent(round: number): Promise<void> {
    for (const [i, id] of diskIds.entries()) {
      const blocks = Math.ceil(SIZES[i]! / BLOCK);
      const count = Math.max(2, Math.floor(blocks / 100));
      for (let n = 0; n < count; n++) {
        const block = Math.floor(random() * blocks);
        const length = Math.min(BLOCK, SIZES[i]! - block * BLOCK);
        await p.writeGuest(vm.uuid, id, block * BLOCK, testPattern(round * 100 + n, length));
      }
    }
  }

  /**
   * The attached VBDs. An NBD connection's dom0 VBD goes when the pool sees the connection
   * close, a moment after the reader (or the killed process) closed it: wait for that on
   * XAPI's events.
   */
  async function attachedVbds(): Promise<string[]> {
    let token = '';
    let all = await p.call<XRecords>('VBD.get_all_records');
    for (let events = 0; events < 20; events++) {
      if (!Object.values(all).some((vbd) => otherConfig(vbd)['xapi-sim'] === 'nbd')) break;
      token = (await p.call<{ token: string }>('event.from', ['vbd'], token, 1)).token;
      all = await p.call<XRecords>('VBD.get_all_records');
    }
    const vms = await p.call<XRecords>('VM.get_all_records');
    return Object.values(all)
      .filter((vbd) => vbd.currently_attached === true)
      .map((vbd) => {
        const owner = vms[vbd.VM as string]!;
        return `${owner.name_label}${owner.is_a_snapshot === true ? ' (snapshot)' : ''} ${owner.power_state} #${vbd.userdevice}`;
      })
      .sort();
  }

  /** The replica's digests (read back through XAPI), its mark, and what XAPI says to a start. */
  async function replicaView() {
    const all = await p.call<XRecords>('VM.get_all_records');
    const found = Object.entries(all).filter(
      ([, r]) => r.is_a_snapshot !== true && otherConfig(r)['replikit:replica'] === job.target.replicaName,
    );
    expect(found.length).toBe(1);
    const [ref, record] = found[0]!;
    const info = await hv.getVM(record.uuid as string);
    const digests = await Promise.all(info.disks.map(async (d) => sha(await readWholeDisk(hv, d))));
    const start = await p.call('VM.start', ref, false, false).then(
      () => 'started',
      (error: { xapiCode?: string }) => error.xapiCode,
    );
    return { digests, mark: otherConfig(record)['replikit:mark'], start, ref };
  }

  /**
   * Labels of runs of this store that ended failed or cancelled: a snapshot named for one may
   * appear after its rollback (the killed process's VM.snapshot arrived late); the job's next
   * run deletes it, which the end of the matrix checks.
   */
  async function endedRunLabels(): Promise<Set<string>> {
    const ended = (await allRuns()).filter((r) => r.state === 'failed' || r.state === 'cancelled');
    return new Set(ended.map((r) => `replikit replikit-${r.runId}`));
  }

  /**
   * What a run may leave: the source's one base snapshot, restore points within retention;
   * with `lateAllowed`, also snapshots of failed or cancelled runs, which the next run deletes.
   */
  async function expectNothingLeft(context: string, lateAllowed = true): Promise<void> {
    expect(await p.applianceVbds(), context).toEqual([]);
    expect(
      (await p.appliances()).map((a) => a.power),
      context,
    ).toEqual(['Halted']);
    expect(await attachedVbds(), context).toEqual(attachedAtStart);
    const vms = await p.call<XRecords>('VM.get_all_records');
    const late = lateAllowed ? await endedRunLabels() : new Set<string>();
    const snapshotsOfSource = Object.values(vms).filter(
      (r) => r.is_a_snapshot === true && r.snapshot_of === vm.ref && !late.has(String(r.name_label)),
    );
    expect(snapshotsOfSource.length, `${context}: snapshots of the source`).toBeLessThanOrEqual(1);
    const vdiRecords = await p.call<XRecords>('VDI.get_all_records');
    const pending = Object.values(vdiRecords).filter((r) => otherConfig(r)['replikit:pending-of'] !== undefined);
    expect(
      pending.map((r) => r.name_label),
      `${context}: pending VDIs`,
    ).toEqual([]);
    const loose = Object.values(vdiRecords).filter(
      (r) =>
        (r.VBDs as string[]).length === 0 && r.type !== 'cbt_metadata' && otherConfig(r)['replikit:abd'] === undefined,
    );
    expect(
      loose.map((r) => `${r.name_label} (${JSON.stringify(otherConfig(r))})`),
      `${context}: VDIs without a VBD`,
    ).toEqual([]);
  }

  /**
   * For a failed resume's message: the appliances' VBDs (device, VDI uuid, attached, owner mark),
   * what their agents were told is plugged (devices.json) and the end of their agent.log.
   */
  async function applianceState(): Promise<string> {
    const lines: string[] = [];
    const vbds = await p.call<XRecords>('VBD.get_all_records');
    for (const appliance of await p.appliances()) {
      lines.push(`appliance ${appliance.uuid} ${appliance.power}`);
      for (const vbd of Object.values(vbds).filter((v) => v.VM === appliance.ref)) {
        const vdi = vbd.VDI === 'OpaqueRef:NULL' ? '-' : await p.call<string>('VDI.get_uuid', vbd.VDI);
        lines.push(
          `  VBD #${vbd.userdevice} ${vdi} attached=${vbd.currently_attached} ${JSON.stringify(otherConfig(vbd))}`,
        );
      }
      const folder = p.sim.appliance(appliance.ref)?.folder;
      if (folder === undefined) continue;
      for (const file of ['devices.json', 'agent.log']) {
        const text = await readFile(join(folder, file), 'utf8').catch((error: Error) => error.message);
        lines.push(`  ${file}: ${text.slice(-3000)}`);
      }
    }
    return `\n${lines.join('\n')}`;
  }

  const allRuns = () => new FileStateStore(stateDir).listRuns();
  const unfinishedRuns = async () => (await allRuns()).filter((r) => !isTerminal(r.state));

  let requests = 0;
  const requestFile = () => join(dir, `request-${requests++}.json`);
  async function runToEnd(request: Record<string, unknown>): Promise<EngineChildOutcome> {
    const child = await startEngineChild(command, { stateDir, ...request }, requestFile());
    return child.done;
  }

  // The first (full) run, then a calibration incremental: its length in calls and time.
  trace('full run');
  const full = await runToEnd({ job });
  trace(`full run: ${JSON.stringify(full.result)}`);
  expect(full.result?.outcome, full.stderr + JSON.stringify(full.error)).toBe('completed');
  await guestWritesOnePercent(0);
  const calibrationStartCalls = calls;
  let started = 0;
  const calibration = await startEngineChild(command, { stateDir, job }, requestFile(), () => {
    started = performance.now();
  });
  const calibrated = await calibration.done;
  trace(
    `calibration: ${JSON.stringify(calibrated.result)} ${calibrated.states.map((st, i) => `${st}@${calibrated.stateTimes[i]}`).join(' ')}`,
  );
  const calibrationMs = performance.now() - started;
  const calibrationCalls = calls - calibrationStartCalls;
  expect(calibrated.result?.outcome, calibrated.stderr).toBe('completed');
  let previous = await sourceDigests();
  expect((await replicaView()).digests).toEqual(previous);
  await expectNothingLeft('after the calibration run');

  const outcomes: string[] = [];
  const began = performance.now();
  for (let point = 0; point < spec.points; point++) {
    await guestWritesOnePercent(point + 1);
    const wanted = await sourceDigests();
    expect(wanted).not.toEqual(previous);
    const byCall = point % 2 === 0;
    const at = byCall ? 1 + Math.floor(random() * calibrationCalls) : Math.floor(random() * calibrationMs);
    const where = byCall ? `at XAPI call ${at}/${calibrationCalls}` : `after ${at}/${Math.round(calibrationMs)} ms`;
    let kill: () => void = () => undefined;
    const first = calls;
    const runsBefore = new Set((await allRuns()).map((r) => r.runId));
    onCall = byCall
      ? (n) => {
          if (n - first === at) kill();
        }
      : undefined;
    const child = await startEngineChild(command, { stateDir, job }, requestFile(), () => {
      if (!byCall) setTimeout(() => kill(), at);
    });
    kill = child.kill;
    const killed = await child.done;
    trace(`point ${point} killed: ${killed.signal} ${killed.states.join(',')}\n    ${recent.join('\n    ')}`);
    onCall = undefined;
    const lastState = killed.states.at(-1) ?? 'none';
    const context = `point ${point} (${where}, last state ${lastState}, seed ${spec.seed})`;

    const unfinished = await unfinishedRuns();
    expect(unfinished.length, context).toBeLessThanOrEqual(1);
    const run = unfinished[0];
    const rollback = point % 4 === 3;
    let outcome: string;
    if (killed.signal !== 'SIGKILL') {
      // The run ended before its kill.
      expect(killed.result?.outcome, context + killed.stderr).toBe('completed');
      outcome = 'completed-before-kill';
    } else if (!run) {
      // Killed before the run was journaled, or after it ended (before the process exited).
      const fresh = (await allRuns()).filter((r) => !runsBefore.has(r.runId));
      expect(fresh.length, context).toBeLessThanOrEqual(1);
      outcome = fresh[0] ? `${fresh[0].outcome}-at-kill` : 'killed-before-journal';
    } else {
      const resumed = await runToEnd({ resume: run.runId, rollback });
      trace(`point ${point} resumed: ${JSON.stringify(resumed.result)} ${resumed.stderr}`);
      expect(resumed.code, `${context}: ${resumed.stderr}`).toBe(0);
      expect(resumed.error, `${context}${resumed.error ? await applianceState() : ''}`).toBeUndefined();
      outcome = rollback ? `rollback-from-${run.state}` : `resumed-from-${run.state}`;
      const committed = run.state === 'cleanup' && run.outcome === 'completed';
      if (!rollback || committed) {
        expect(resumed.result?.outcome, `${context}: ${JSON.stringify(resumed.result)}`).toBe('completed');
      }
    }
    expect(await unfinishedRuns(), context).toEqual([]);

    const view = await replicaView();
    trace(`point ${point} view`);
    const version =
      JSON.stringify(view.digests) === JSON.stringify(wanted)
        ? 'new'
        : JSON.stringify(view.digests) === JSON.stringify(previous)
          ? 'previous'
          : 'mixed';
    expect(version, `${context}: ${outcome}`).not.toBe('mixed');
    if (outcome.startsWith('resumed') || outcome.startsWith('completed')) expect(version, context).toBe('new');
    if (outcome === 'killed-before-journal') expect(version, context).toBe('previous');
    expect(view.mark, context).toBe('ready');
    expect(view.start, context).toBe('OPERATION_BLOCKED');
    await expectNothingLeft(context);
    outcomes.push(`${point}: ${where}, killed in ${lastState} → ${outcome} → ${version}`);
    if (version === 'new') previous = wanted;
  }
  // One more run: it deletes any snapshot a failed or cancelled run left after its rollback.
  await guestWritesOnePercent(spec.points + 1);
  const last = await runToEnd({ job });
  expect(last.result?.outcome, last.stderr).toBe('completed');
  expect((await replicaView()).digests).toEqual(await sourceDigests());
  await expectNothingLeft('after the last run', false);
  console.info(
    `xen crash matrix (${spec.name}), seed ${spec.seed}, calibration ${calibrationCalls} calls / ${Math.round(calibrationMs)} ms, ` +
      `${spec.points} points in ${Math.round(performance.now() - began)} ms:\n  ${outcomes.join('\n  ')}`,
  );
}
