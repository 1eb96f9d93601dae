import { randomInt } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
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
import { compareBytes, readWholeDisk, testPattern } from '@replikit/core/testing';
import { localTransport } from '@replikit/transport';
import { afterEach, describe, expect, it } from 'vitest';
import { type XenDriver, xenDriver } from '../src/index.js';
import { prepareEngineChild, startEngineChild } from './helpers/engine-child-runner.js';
import { PASSWORD_ENV, startPool, type TestPool } from './helpers/xen-pool.js';

/*
 * Issue 19, crash safety of the Xen failover hooks: an unplanned failover and its undo run in a
 * child process that SIGKILLs itself at a fault point (the engine's journaled steps and the
 * driver's own steps, as a calibration run lists them). The parent then resumes the operation
 * and checks the replica is in the operation's after-state, byte for byte the restore point; at
 * the kill, a running replica is always one marked promoted (or being promoted), never one a run
 * is writing.
 *
 * REPLIKIT_XEN_FAILOVER_CRASH_POINTS (else REPLIKIT_CRASH_POINTS, default 4) points, drawn with
 * REPLIKIT_XEN_FAILOVER_CRASH_SEED.
 */

const MiB = 1024 * 1024;
const POINTS = Number(process.env.REPLIKIT_XEN_FAILOVER_CRASH_POINTS ?? process.env.REPLIKIT_CRASH_POINTS ?? 4);
const SEED = Number(process.env.REPLIKIT_XEN_FAILOVER_CRASH_SEED ?? randomInt(2 ** 31));
const trace = (what: string) => {
  if (process.env.REPLIKIT_XEN_CRASH_TRACE) process.stderr.write(`${new Date().toISOString()} ${what}\n`);
};
const childSource = join(dirname(fileURLToPath(import.meta.url)), 'helpers', 'failover-child.ts');

describe('SIGKILL of a xen failover operation at its fault points, then resume', () => {
  let pool: TestPool | undefined;
  let xen: XenDriver | undefined;
  let dir: string | undefined;
  afterEach(async () => {
    await xen?.close();
    await pool?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it(`unplanned failover and undo: ${POINTS} kills, each resumed to the after-state`, async () => {
    console.info(`xen failover crash: seed ${SEED} (REPLIKIT_XEN_FAILOVER_CRASH_SEED=${SEED} repeats it)`);
    pool = await startPool();
    const p = pool;
    dir = await mkdtemp(join(tmpdir(), 'rk-xen-fo-crash-'));
    const stateDir = join(dir, 'state');
    const vm = await p.makeVM('web', [2 * MiB, MiB]);
    xen = await p.driver();
    const hv = xen;
    for (const disk of (await hv.getVM(vm.uuid)).disks)
      await p.writeGuest(vm.uuid, disk.id, 4096, testPattern(3, 9000));
    const endpoint = { driver: 'xen', url: p.sim.url, passwordEnv: PASSWORD_ENV };
    const jobInput: JobSpecInput = {
      name: 'web-dr',
      source: { ...endpoint, vm: 'web' },
      target: { ...endpoint, replicaName: 'web-dr' },
      method: 'cbt',
    } as JobSpecInput;
    const job = parseJob(jobInput);
    const drivers = new DriverRegistry().register(xenDriver);
    const stateStore = new FileStateStore(stateDir);
    const replication = new ReplicationEngine({ stateStore, drivers, ruleSets: [], transport: localTransport() });
    const run = await replication.run(job);
    await replication.close();
    expect(run.outcome, JSON.stringify(run.error)).toBe('completed');
    const replica = run.replica!;
    const point = await Promise.all(replica.disks.map((d) => readWholeDisk(hv, d)));
    const failover = new FailoverEngine({ stateStore, failoverStore: new FileFailoverStore(stateDir), drivers });
    const command = await prepareEngineChild(dir, childSource);
    const replicaRef = await p.call<string>('VM.get_by_uuid', replica.id);

    let requests = 0;
    const child = async (op: 'unplanned' | 'undo', killAt?: string) => {
      const request = { stateDir, job: jobInput, op, ...(killAt ? { killAt } : {}) };
      const started = await startEngineChild(command, request, join(dir!, `request-${requests++}.json`));
      return { outcome: await started.done };
    };
    const pointsOf = async (op: 'unplanned' | 'undo') => {
      const request = { stateDir, job: jobInput, op };
      const file = join(dir!, `calibrate-${op}.json`);
      const { spawn } = await import('node:child_process');
      const { writeFile } = await import('node:fs/promises');
      await writeFile(file, JSON.stringify(request));
      const proc = spawn(command[0]!, [...command.slice(1), file], { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      proc.stdout.setEncoding('utf8').on('data', (c: string) => {
        out += c;
      });
      await new Promise((resolve) => proc.on('close', resolve));
      expect(out).toContain('result ok');
      return out
        .split('\n')
        .filter((l) => l.startsWith('point '))
        .map((l) => l.slice(6));
    };
    /** The replica as the pool has it. */
    const observe = async () => {
      const config = await p.call<Record<string, string>>('VM.get_other_config', replicaRef);
      return {
        power: await p.call<string>('VM.get_power_state', replicaRef),
        blocked: Object.keys(await p.call<Record<string, string>>('VM.get_blocked_operations', replicaRef)),
        failover: config['replikit:failover']
          ? (JSON.parse(config['replikit:failover']) as { state: string }).state
          : '',
      };
    };
    const expectPointBytes = async () => {
      for (const [i, disk] of replica.disks.entries()) {
        expect(compareBytes(await readWholeDisk(hv, disk), point[i]!)).toBe('equal');
      }
    };
    const writeOnReplica = async () => {
      const [vbd] = await p.call<string[]>('VM.get_VBDs', replicaRef);
      const vdi = await p.call<string>('VDI.get_uuid', await p.call<string>('VBD.get_VDI', vbd!));
      await p.writeGuest(replica.id, vdi, 0, new Uint8Array(30_000).fill(0xab));
    };

    // Calibration: the points each operation passes.
    trace('calibrating');
    const all = [
      ...(await pointsOf('unplanned')).map((at) => ({ op: 'unplanned' as const, at })),
      ...(await pointsOf('undo')).map((at) => ({ op: 'undo' as const, at })),
    ];
    expect(all.map((x) => x.at)).toEqual(expect.arrayContaining(['promote:flagged', 'demote:reverted']));
    // A seeded shuffle of the points, repeated as often as POINTS asks.
    let x = SEED >>> 0;
    const draw = (n: number) => {
      x = (Math.imul(x, 1_103_515_245) + 12_345) >>> 0;
      return Math.floor((x / 2 ** 32) * n);
    };
    const chosen: typeof all = [];
    while (chosen.length < POINTS) {
      const deck = [...all];
      for (let i = deck.length - 1; i > 0; i--) {
        const j = draw(i + 1);
        [deck[i], deck[j]] = [deck[j]!, deck[i]!];
      }
      chosen.push(...deck.slice(0, POINTS - chosen.length));
    }

    for (const { op, at } of chosen) {
      if (op === 'undo') {
        if ((await failover.status(job)).state === 'ready') await failover.unplanned(job, { force: true });
        await writeOnReplica();
      } else if ((await failover.status(job)).state !== 'ready') {
        await failover.undo(job);
      }
      trace(`${op}: kill at ${at}`);
      const { outcome } = await child(op, at);
      expect(outcome.signal, `${op} killed at ${at}: ${outcome.stderr}`).toBe('SIGKILL');
      const mid = await observe();
      // A replica that runs is one being (or already) promoted; start is blocked otherwise.
      if (mid.power === 'Running') expect(['promoting', 'promoted'], `${op} at ${at}`).toContain(mid.failover);
      else if (mid.failover === '') expect(mid.blocked, `${op} at ${at}`).toContain('start');
      trace(`${op}: resume after ${at}`);
      await failover.resume(job);
      const after = await observe();
      const status = await failover.status(job);
      if (op === 'unplanned') {
        expect({ at, state: status.state, ...after }).toEqual({
          at,
          state: 'failed-over',
          power: 'Running',
          blocked: [],
          failover: 'promoted',
        });
      } else {
        expect({ at, state: status.state, power: after.power, failover: after.failover }).toEqual({
          at,
          state: 'ready',
          power: 'Halted',
          failover: '',
        });
        expect(after.blocked).toContain('start');
      }
      await expectPointBytes();
      expect(await hv.listRestorePoints(replica)).toHaveLength(1);
    }
  }, 600_000);
});
