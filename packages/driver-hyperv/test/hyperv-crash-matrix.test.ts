import { createHash, randomInt } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FileStateStore, isTerminal, type RunState } from '@replikit/core';
import { testPattern } from '@replikit/core/testing';
import { adminCmdlet, createSimulatedHost } from '@replikit/hyperv-sim';
import { afterAll, describe, expect, it } from 'vitest';
import {
  type EngineChildOutcome,
  prepareEngineChild,
  startEngineChild,
} from '../../driver-xen/test/helpers/engine-child-runner.js';
import { identityOf, listPending, readMark } from '../src/target/replica-files.js';
import { LOCAL_TARGET_FILES } from '../src/target/target-files.js';

/*
 * Issue 20, crash safety: the engine (in a child process) is SIGKILLed at seeded random moments of
 * a Hyper-V ► Hyper-V run on the simulated host, then a new child resumes the run or rolls it back.
 * The moments are spread over the stages of a calibration run: point i aims at stage i mod n (the
 * child's start before its first state, then each state the calibration run went through) and is
 * killed a random fraction of that stage's calibrated length after the child announces it, so every
 * stage is hit whatever the machine's speed. Within each round over the stages, every other stage is
 * rolled back instead of resumed, alternating between rounds. After each point the replica's disks
 * equal the source as the run found it or the previous version, never a mix; the replica is marked
 * ready; no pending VHDX is left in its folder; the source has no more checkpoints and reference
 * points, and the replica no more checkpoints, than after a clean run.
 *
 * REPLIKIT_HYPERV_CRASH_POINTS (else REPLIKIT_CRASH_POINTS, else 4) and REPLIKIT_HYPERV_CRASH_SEED.
 */
const POINTS = Number(process.env.REPLIKIT_HYPERV_CRASH_POINTS ?? process.env.REPLIKIT_CRASH_POINTS ?? 4);
const SEED = Number(process.env.REPLIKIT_HYPERV_CRASH_SEED ?? randomInt(2 ** 31));
const MiB = 2 ** 20;
const BLOCK = 64 * 1024;
const SIZES = [4 * MiB, 2 * MiB];
const VM = 'crash-source';
const REPLICA_VM = `${VM}-replica`;
const here = dirname(fileURLToPath(import.meta.url));

/** mulberry32: the same seed draws the same moments. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

const sha = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex').slice(0, 16);

describe('SIGKILL of the engine at random moments of a hyperv ► hyperv run, then resume', () => {
  let dir: string | undefined;
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it(`${POINTS} kills: each replica is the new or the previous version, nothing left behind`, async () => {
    const random = seeded(SEED);
    console.info(`hyperv crash matrix: seed ${SEED} (REPLIKIT_HYPERV_CRASH_SEED=${SEED} repeats it)`);
    dir = await mkdtemp(join(tmpdir(), 'rk-hyperv-crash-'));
    const host = await createSimulatedHost(join(dir, 'host'));
    const stateDir = join(dir, 'state');
    const command = await prepareEngineChild(dir, join(here, 'helpers', 'hyperv-engine-child.ts'));
    await adminCmdlet(host.root, 'New-VM', { Name: VM, Generation: 2, NoVHD: true });
    for (const [i, size] of SIZES.entries()) {
      const path = join(host.root, 'disks', `crash-${i}.vhdx`);
      await adminCmdlet(host.root, 'New-VHD', { Path: path, SizeBytes: size, Dynamic: true, BlockSizeBytes: MiB });
      await adminCmdlet(host.root, 'Add-VMHardDiskDrive', { VMName: VM, Path: path });
    }
    await host.guestWrite(VM, 0, 4095, testPattern(1, 300_000));
    await host.guestWrite(VM, 1, SIZES[1]! - 519, testPattern(2, 519));
    const job = {
      name: 'crash-hyperv',
      source: { driver: 'hyperv', pwsh: host.pwsh, vm: VM },
      target: { driver: 'hyperv', pwsh: host.pwsh, replicaName: 'crash-replica', replicaPath: join(host.root, 'r') },
      method: 'qhybrid',
      options: { retention: 2 },
    };

    let requests = 0;
    const requestFile = () => join(dir!, `request-${requests++}.json`);
    const runToEnd = async (request: Record<string, unknown>): Promise<EngineChildOutcome> =>
      (await startEngineChild(command, { stateDir, ...request }, requestFile())).done;
    const allRuns = () => new FileStateStore(stateDir).listRuns();
    const unfinishedRuns = async () => (await allRuns()).filter((r) => !isTerminal(r.state));

    const sourceDigests = async () =>
      Promise.all(SIZES.map(async (size, i) => sha(await host.guestRead(VM, i, 0, size))));
    const guestWritesOnePercent = async (round: number) => {
      for (const [i, size] of SIZES.entries()) {
        const blocks = Math.ceil(size / BLOCK);
        const writes = Array.from({ length: Math.max(2, Math.floor(blocks / 100)) }, (_, n) => {
          const block = Math.floor(random() * blocks);
          return { offset: block * BLOCK, data: testPattern(round * 100 + n, Math.min(BLOCK, size - block * BLOCK)) };
        });
        await host.guestWrites(VM, i, writes);
      }
    };
    /** The replica as a user of the host sees it: its disks' content (live files), mark and leftovers. */
    const replicaView = async () => {
      const state = await host.state();
      const vms = state.vms.filter((v) => v.name === REPLICA_VM);
      expect(vms.length).toBe(1);
      const replica = vms[0]!;
      const folder = identityOf(replica.notes)!.dir;
      const digests = await Promise.all(
        replica.drives.map(async (drive, i) => {
          const reader = await host.openDisk(drive.path);
          try {
            return sha(await reader.read(0, SIZES[i]!));
          } finally {
            await reader.close();
          }
        }),
      );
      const rct = JSON.parse(await readFile(join(host.root, 'rct.json'), 'utf8')) as { referencePoints?: unknown[] };
      const snapshots = state.snapshots ?? [];
      return {
        digests,
        mark: await readMark(LOCAL_TARGET_FILES, folder),
        pending: (await listPending(LOCAL_TARGET_FILES, folder)).map((p) => p.path),
        counts: {
          sourceCheckpoints: snapshots.filter((s) => s.vmName === VM).length,
          replicaCheckpoints: snapshots.filter((s) => s.vmName === REPLICA_VM).length,
          referencePoints: (rct.referencePoints ?? []).length,
        },
      };
    };

    const full = await runToEnd({ job });
    expect(full.result?.outcome, full.stderr + JSON.stringify(full.error)).toBe('completed');
    await guestWritesOnePercent(0);
    let started = 0;
    const calibration = await startEngineChild(command, { stateDir, job }, requestFile(), () => {
      started = performance.now();
    });
    const calibrated = await calibration.done;
    const calibrationMs = performance.now() - started;
    expect(calibrated.result?.outcome, calibrated.stderr).toBe('completed');
    // The stages to aim at: the child's start (spawning the fake pwsh takes most of a run's first
    // seconds), then each state the calibration run went through, with how long each one lasted.
    const times = calibrated.stateTimes;
    const stages = [
      { stage: 'start', ms: calibrationMs - (times.at(-1)! - times[0]!) },
      ...calibrated.states.flatMap((state, k) =>
        isTerminal(state as RunState) ? [] : [{ stage: state, ms: (times[k + 1] ?? times[k]!) - times[k]! }],
      ),
    ];
    console.info(
      `hyperv crash matrix: calibration stages ${stages.map((s) => `${s.stage} ${Math.round(s.ms)} ms`).join(', ')}`,
    );
    let previous = await sourceDigests();
    const clean = await replicaView();
    expect(clean.digests).toEqual(previous);
    expect(clean.pending).toEqual([]);

    const outcomes: string[] = [];
    for (let point = 0; point < POINTS; point++) {
      await guestWritesOnePercent(point + 1);
      const wanted = await sourceDigests();
      const aim = stages[point % stages.length]!;
      const at = Math.floor(random() * aim.ms);
      const runsBefore = new Set((await allRuns()).map((r) => r.runId));
      let kill: () => void = () => undefined;
      const armAt = (stage: string) => {
        if (stage === aim.stage) setTimeout(() => kill(), at);
      };
      const child = await startEngineChild(
        command,
        { stateDir, job },
        requestFile(),
        () => armAt('start'),
        (state) => armAt(state),
      );
      kill = child.kill;
      const killed = await child.done;
      const lastState = killed.states.at(-1) ?? 'start';
      const context = `point ${point} (aimed ${at}/${Math.round(aim.ms)} ms into ${aim.stage}, last state ${lastState}, seed ${SEED})`;
      const unfinished = await unfinishedRuns();
      expect(unfinished.length, context).toBeLessThanOrEqual(1);
      const run = unfinished[0];
      const rollback = (point % stages.length) % 2 !== Math.floor(point / stages.length) % 2;
      let outcome: string;
      if (killed.signal !== 'SIGKILL') {
        expect(
          killed.result?.outcome,
          `${context}: ${JSON.stringify(killed.result ?? killed.error)} ${killed.stderr}`,
        ).toBe('completed');
        outcome = 'completed-before-kill';
      } else if (!run) {
        const fresh = (await allRuns()).filter((r) => !runsBefore.has(r.runId));
        expect(fresh.length, context).toBeLessThanOrEqual(1);
        outcome = fresh[0] ? `${fresh[0].outcome}-at-kill` : 'killed-before-journal';
      } else {
        const resumed = await runToEnd({ resume: run.runId, rollback });
        expect(resumed.code, `${context}: ${resumed.stderr}`).toBe(0);
        expect(resumed.error, context).toBeUndefined();
        outcome = rollback ? `rollback-from-${run.state}` : `resumed-from-${run.state}`;
        const committed = run.state === 'cleanup' && run.outcome === 'completed';
        if (!rollback || committed) {
          expect(resumed.result?.outcome, `${context}: ${JSON.stringify(resumed.result)}`).toBe('completed');
        }
      }
      expect(await unfinishedRuns(), context).toEqual([]);
      const view = await replicaView();
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
      expect(view.pending, context).toEqual([]);
      expect(view.counts.sourceCheckpoints, context).toBeLessThanOrEqual(clean.counts.sourceCheckpoints);
      // A base the source keeps is a checkpoint or, once the next run's plan converted it, an RCT
      // reference point (a run rolled back after its plan leaves the base converted): so checkpoints
      // and reference points together are no more than after a clean run. Found by this matrix at
      // 20 points (seed 1381480656, point 17, killed in plan): a kill between ConvertToReferencePoint
      // and the driver storing its id left the point behind; the driver records the conversion
      // before the call and adopts the point it made (test/reference-point-leak.test.ts).
      const kept = view.counts.sourceCheckpoints + view.counts.referencePoints;
      const leaked = kept - (clean.counts.sourceCheckpoints + clean.counts.referencePoints);
      expect(leaked, `${context}: ${JSON.stringify(view.counts)}`).toBeLessThanOrEqual(0);
      expect(view.counts.replicaCheckpoints, context).toBeLessThanOrEqual(clean.counts.replicaCheckpoints);
      outcomes.push(`${point}: ${at} ms into ${aim.stage}, killed in ${lastState} → ${outcome} → ${version}`);
      console.info(`hyperv crash matrix: ${outcomes.at(-1)}`);
      if (version === 'new') previous = wanted;
    }
    // One more run: the replica catches up and nothing more is left than after a clean run.
    await guestWritesOnePercent(POINTS + 1);
    const last = await runToEnd({ job });
    expect(last.result?.outcome, last.stderr).toBe('completed');
    const end = await replicaView();
    expect(end.digests).toEqual(await sourceDigests());
    expect(end.counts).toEqual(clean.counts);
    console.info(
      `hyperv crash matrix, seed ${SEED}, calibration ${Math.round(calibrationMs)} ms:\n  ${outcomes.join('\n  ')}`,
    );
  }, 1_800_000);
});
