// The daemon's overlap and catch-up policies against a real engine and the file driver, on a fake
// clock: runs are made to last 5 s of the clock's time, and the test moves the clock from one
// wait of the daemon to the next (it waits for the daemon's next wait, never for time).
import { rename } from 'node:fs/promises';
import { join } from 'node:path';
import { Daemon, type DaemonRpoEvent, type DaemonSlotMissedEvent, FakeClock, readJobStatuses } from '@replikit/core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { runCli } from './helpers/cli-harness.js';
import { createDaemonRig, type DaemonRig, driveUntil, newRunLog, throttled } from './helpers/daemon-rig.js';

const T0 = 1_800_000_000_000; // a multiple of 2 s and 10 s: slots of `every` fall on it
let rig: DaemonRig;

beforeEach(async () => {
  rig = await createDaemonRig();
});
afterEach(async () => {
  await rig.close();
});

describe('overlap policy', () => {
  it('buffer-one: a job every 2 s whose runs take 5 s runs one at a time, exactly one run right after each', async () => {
    const clock = new FakeClock(T0);
    const log = newRunLog();
    const daemon = new Daemon({
      engine: throttled(rig.engine, clock, 5000, log),
      jobs: [rig.job('every2', { schedule: { every: '2s' } })],
      clock,
    });
    await daemon.start();
    await driveUntil(clock, T0 + 30_000);
    await daemon.stop();

    expect(log.maxConcurrent).toBe(1);
    // The first slot at 2 s; each run ends at +5 s and the buffered one starts at that moment.
    expect(log.starts.map((t) => (t - T0) / 1000)).toEqual([2, 7, 12, 17, 22, 27]);
    for (let i = 1; i < log.starts.length; i++) expect(log.starts[i]).toBe(log.ends[i - 1]);
    // Every run but the one the stop cancelled replicated, and the replica equals the source.
    expect(log.outcomes.slice(0, -1).every((o) => o === 'completed')).toBe(true);
    expect(await rig.replicaEqualsSource('every2')).toBe(true);
  });

  it('skip: slots that come during a run are dropped; the next run waits for the next slot', async () => {
    const clock = new FakeClock(T0);
    const log = newRunLog();
    const missed: number[] = [];
    const daemon = new Daemon({
      engine: throttled(rig.engine, clock, 5000, log),
      jobs: [rig.job('skip2', { schedule: { every: '2s' }, overlap: 'skip' })],
      clock,
    });
    daemon.on('slot-missed', (e) => missed.push(e.count));
    await daemon.start();
    await driveUntil(clock, T0 + 30_000);
    await daemon.stop();

    expect(log.maxConcurrent).toBe(1);
    expect(log.starts.map((t) => (t - T0) / 1000)).toEqual([2, 8, 14, 20, 26]);
    // During each 5 s run two slots pass (4 and 6, 10 and 12, …).
    expect(missed.slice(0, 4)).toEqual([2, 2, 2, 2]);
  });
});

describe('catch-up policy', () => {
  for (const catchUp of ['once', 'skip'] as const) {
    it(`${catchUp}: stopped for 10 slots and restarted, ${catchUp === 'once' ? 'exactly one catch-up run' : 'no run'}, 10 missed slots recorded`, async () => {
      const clock = new FakeClock(T0);
      const job = rig.job('down', { schedule: { every: '2s' }, catchUp });
      const first = newRunLog();
      const before = new Daemon({ engine: throttled(rig.engine, clock, 0, first), jobs: [job], clock });
      await before.start();
      await driveUntil(clock, T0 + 2000); // the slot at 2 s runs
      await before.stop();
      expect(first.starts).toEqual([T0 + 2000]);

      clock.advanceTo(T0 + 22_000); // the daemon is down for the slots at 4, 6, …, 22 s
      const log = newRunLog();
      const missed: DaemonSlotMissedEvent[] = [];
      const after = new Daemon({ engine: throttled(rig.engine, clock, 0, log), jobs: [job], clock });
      after.on('slot-missed', (e) => missed.push(e));
      await after.start();
      await clock.whenSleeping(1); // it waits for the slot at 24 s
      const state = after.states()[0]!;
      await after.stop();

      expect(missed.map((e) => e.count)).toEqual([10]);
      expect(state.missedTotal).toBe(10);
      expect(state.nextDue).toBe(new Date(T0 + 24_000).toISOString());
      if (catchUp === 'once') {
        expect(log.starts).toEqual([T0 + 22_000]);
        expect(state.lastOutcome?.reason).toBe('catch-up');
        expect(state.lastOutcome?.outcome).toBe('completed');
        expect(state.missedSlots).toBe(0); // the debt is paid by the catch-up run
      } else {
        expect(log.starts).toEqual([]);
        expect(state.missedSlots).toBe(10);
      }
    });
  }
});

describe('RPO', () => {
  it('rpo 30s: failing runs go warning then critical (status and events), and a success recovers', async () => {
    const clock = new FakeClock(T0);
    const events: DaemonRpoEvent[] = [];
    const daemon = new Daemon({
      engine: rig.engine,
      jobs: [rig.job('rpo', { schedule: { every: '10s' }, rpo: '30s' })],
      clock,
    });
    daemon.on('rpo', (e) => events.push(e));
    const level = async () => (await readJobStatuses(rig.store, clock.now()))[0]!;
    await daemon.start();
    await driveUntil(clock, T0 + 10_000); // the run at 10 s succeeds
    expect((await level()).rpoLevel).toBe('ok');

    // The source VM disappears: every run fails (E_NOT_FOUND, permanent: no retries, next slot again).
    await rename(join(rig.dir, 'vms'), join(rig.dir, 'vms-gone'));
    await driveUntil(clock, T0 + 41_000);
    const warning = await level();
    expect(warning.rpoLevel).toBe('warning');
    expect(warning.lastRun).toMatchObject({ outcome: 'failed', code: 'E_NOT_FOUND', errorClass: 'permanent' });
    expect(warning.achievedRpoSeconds).toBe(30.001);
    expect(warning.rpoDebtSlots).toBe(3); // the failed runs of the slots at 20, 30 and 40 s
    await driveUntil(clock, T0 + 71_000);
    expect((await level()).rpoLevel).toBe('critical');

    await rename(join(rig.dir, 'vms-gone'), join(rig.dir, 'vms'));
    await driveUntil(clock, T0 + 80_000); // the run at 80 s succeeds
    const recovered = await level();
    await daemon.stop();
    expect(recovered.rpoLevel).toBe('ok');
    expect(recovered.rpoDebtSlots).toBe(0);
    expect(events.map((e) => `${e.from}>${e.to}`)).toEqual([
      'unknown>ok',
      'ok>warning',
      'warning>critical',
      'critical>ok',
    ]);
    expect(events[1]!.at).toBe(new Date(T0 + 10_000 + 30_001).toISOString());
  });
});

describe('replikit status', () => {
  it('works the RPO out at the time of the command, from the state the daemon saved', async () => {
    // Two daemons whose clocks stood 10 minutes in the past: each job's last restore point is ~590 s old now.
    const past = Math.floor((Date.now() - 600_000) / 10_000) * 10_000;
    for (const [name, options] of [
      ['lagging', { rpo: '5m', rpoCritical: '1h' }],
      ['late', { rpo: '30s' }],
    ] as const) {
      const clock = new FakeClock(past);
      const daemon = new Daemon({
        engine: rig.engine,
        jobs: [rig.job(name, { schedule: { every: '10s' }, ...options })],
        clock,
      });
      await daemon.start();
      await driveUntil(clock, past + 10_000);
      await daemon.stop();
    }
    const json = await runCli(['status', '--json'], { cwd: rig.dir });
    expect(json.code).toBe(0);
    const statuses = JSON.parse(json.stdout) as Array<{ job: string; rpoLevel: string; achievedRpoSeconds: number }>;
    expect(statuses.map((s) => [s.job, s.rpoLevel])).toEqual([
      ['lagging', 'warning'],
      ['late', 'critical'],
    ]);
    expect(statuses[0]!.achievedRpoSeconds).toBeGreaterThan(580);
    const table = await runCli(['status'], { cwd: rig.dir });
    expect(table.stdout).toMatch(/late\s+stopped\s+completed .* critical/);
  });
});
