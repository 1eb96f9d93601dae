// Maintenance windows and pause/resume requests of the daemon, with a real engine on memory
// drivers and a fake clock: the test moves the clock itself (the replica's first write moves it
// to the window's end), and waits for the daemon's events, never for time.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { localTransport } from '@replikit/transport';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  Daemon,
  type DaemonRunEndEvent,
  type DaemonWindowEvent,
  DriverRegistry,
  FakeClock,
  FileStateStore,
  type JobSpecInput,
  jobStatusOf,
  parseJob,
  ReplicationEngine,
  WindowCalendar,
} from '../src/index.js';
import { instanceDriver } from './helpers/instance-driver.js';
import { createMemoryDriver, type MemoryDriver } from './helpers/memory-driver.js';

const MiB = 1024 * 1024;
const MIN = 60_000;
/** A whole hour (UTC): the hourly window `0 * * * *` opens here. */
const T0 = Date.parse('2027-03-01T10:00:00Z');
let dir: string;
let source: MemoryDriver;
let target: MemoryDriver;
let store: FileStateStore;
let engine: ReplicationEngine;

function job(options: Record<string, unknown>): JobSpecInput {
  return {
    name: 'win',
    source: { driver: 'memsrc', vm: 'vm1' },
    target: { driver: 'memdst' },
    method: 'qhybrid',
    blockSize: 65536,
    options,
  };
}

function fill(data: Uint8Array, seed: number) {
  let x = seed;
  for (let i = 0; i < data.length; i++) {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    data[i] = x >>> 16;
  }
}

/** Resolves with the `count`-th event `name` of the daemon (counting from now). */
function nth<T>(daemon: Daemon, name: 'run-end' | 'window', count: number): Promise<T[]> {
  const seen: T[] = [];
  return new Promise((resolve) => {
    const listener = (event: T) => {
      seen.push(event);
      if (seen.length === count) {
        daemon.off(name, listener as never);
        resolve(seen);
      }
    };
    daemon.on(name, listener as never);
  });
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'replikit-windows-'));
  source = createMemoryDriver({ changeTracking: true });
  target = createMemoryDriver();
  source.addVm('vm1', [{ id: 'a', size: 8 * MiB }]);
  fill(source.vms.get('vm1')!.disks.get('a')!, 3);
  store = new FileStateStore(join(dir, 'state'));
  engine = new ReplicationEngine({
    stateStore: store,
    drivers: new DriverRegistry()
      .register(instanceDriver('memsrc', () => source))
      .register(instanceDriver('memdst', () => target)),
    transport: localTransport(),
    checkpointEveryMs: 3_600_000,
  });
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('maintenance windows', () => {
  it('holds a transfer at the window end, shows held with the reopening time, resumes it from the journal when the window opens, and catches up', async () => {
    const clock = new FakeClock(T0);
    const daemon = new Daemon({
      engine,
      jobs: [job({ schedule: { every: '10m' }, windows: [{ cron: '0 * * * *', duration: '30m', timezone: 'UTC' }] })],
      clock,
      requestPollMs: 0,
    });
    const windows: DaemonWindowEvent[] = [];
    daemon.on('window', (e) => windows.push(e));
    let written = 0;
    let moved = false;
    target.hooks.beforeWrite = (_disk, _offset, length) => {
      written += length;
      // The transfer is under way when the window closes.
      if (!moved) {
        moved = true;
        clock.advanceTo(T0 + 30 * MIN);
      }
    };
    const first = nth<DaemonRunEndEvent>(daemon, 'run-end', 1);
    await daemon.start();
    await clock.whenSleeping(1);
    clock.advanceTo(T0 + 10 * MIN);
    const [stopped] = await first;
    expect(stopped).toMatchObject({ outcome: 'stopped', reason: 'slot', code: 'E_ABORTED' });
    const parked = (await store.listRuns()).find((run) => run.runId === stopped!.runId)!;
    expect(parked.state).toBe('transfer');
    expect(parked.stopped?.reason).toBe('window');
    const sentBefore = written;
    expect(sentBefore).toBeGreaterThan(0);
    expect(sentBefore).toBeLessThan(8 * MiB);

    // Outside the window: held until it opens again, the slots in between caught up once.
    const held = daemon.states()[0]!;
    expect(held.window?.opensAt).toBe(new Date(T0 + 60 * MIN).toISOString());
    const status = jobStatusOf(held, T0 + 30 * MIN);
    expect(status).toMatchObject({ state: 'held', window: { opensAt: new Date(T0 + 60 * MIN).toISOString() } });
    expect(windows).toEqual([expect.objectContaining({ open: false, opensAt: new Date(T0 + 60 * MIN).toISOString() })]);

    written = 0;
    const later = nth<DaemonRunEndEvent>(daemon, 'run-end', 2);
    await clock.whenSleeping(1);
    clock.advanceTo(T0 + 60 * MIN);
    const [resumed, next] = await later;
    await daemon.stop();
    expect(resumed).toMatchObject({ reason: 'resume', runId: stopped!.runId, outcome: 'completed' });
    expect(next).toMatchObject({ outcome: 'completed' });
    expect(windows.at(-1)).toMatchObject({ open: true, closesAt: new Date(T0 + 90 * MIN).toISOString() });
    // The resumed run sent only what the held one had not; the next run, nothing (no change).
    expect(written).toBe(8 * MiB - sentBefore);
    expect(Buffer.compare(target.vms.get('vm1-replica')!.disks.get('a')!, source.vms.get('vm1')!.disks.get('a')!)).toBe(
      0,
    );
    // Slots 10:20 and 10:30 came during the held run, 10:40 and 10:50 outside the window.
    expect(daemon.states()[0]!.missedTotal).toBeGreaterThanOrEqual(4);
  });

  it('when the window opens between slots: the held run is resumed, then one catch-up run for the slots outside', async () => {
    const clock = new FakeClock(T0);
    const daemon = new Daemon({
      engine,
      jobs: [job({ schedule: '5,15,25,35,45,55 * * * *', windows: [{ cron: '0 * * * *', duration: '30m' }] })],
      clock,
      requestPollMs: 0,
    });
    let moved = false;
    target.hooks.beforeWrite = () => {
      if (!moved) {
        moved = true;
        clock.advanceTo(T0 + 30 * MIN);
      }
    };
    const first = nth<DaemonRunEndEvent>(daemon, 'run-end', 1);
    await daemon.start();
    await clock.whenSleeping(1);
    clock.advanceTo(T0 + 5 * MIN);
    expect((await first)[0]).toMatchObject({ outcome: 'stopped' });
    // 10:35, 10:45 and 10:55 fall outside the window; it opens at 11:00, before the 11:05 slot.
    const later = nth<DaemonRunEndEvent>(daemon, 'run-end', 2);
    for (const t of [35, 45, 55, 60]) {
      await clock.whenSleeping(1);
      clock.advanceTo(T0 + t * MIN);
    }
    const [resumed, caughtUp] = await later;
    const at = clock.now();
    await daemon.stop();
    expect(resumed).toMatchObject({ reason: 'resume', outcome: 'completed' });
    expect(caughtUp).toMatchObject({ reason: 'catch-up', outcome: 'completed' });
    expect(at).toBe(T0 + 60 * MIN);
  });

  it('works out open and closed stretches across midnight, in a time zone, with touching windows', () => {
    const nights = new WindowCalendar([{ cron: '0 22 * * *', duration: '8h', timezone: 'Europe/Paris' }]);
    // 22:00 Paris in March (before daylight saving) is 21:00 UTC.
    const at = (iso: string) => Date.parse(iso);
    expect(nights.at(at('2027-03-01T20:59:00Z'))).toEqual({ open: false, opensAt: at('2027-03-01T21:00:00Z') });
    expect(nights.at(at('2027-03-01T21:00:00Z'))).toEqual({ open: true, closesAt: at('2027-03-02T05:00:00Z') });
    expect(nights.at(at('2027-03-02T04:59:59Z'))).toEqual({ open: true, closesAt: at('2027-03-02T05:00:00Z') });
    expect(nights.at(at('2027-03-02T05:00:00Z'))).toEqual({ open: false, opensAt: at('2027-03-02T21:00:00Z') });
    const touching = new WindowCalendar([
      { cron: '0 1 * * *', duration: '1h', timezone: 'UTC' },
      { cron: '0 2 * * *', duration: '30m', timezone: 'UTC' },
    ]);
    expect(touching.at(at('2027-03-01T01:10:00Z'))).toEqual({ open: true, closesAt: at('2027-03-01T02:30:00Z') });
    expect(new WindowCalendar([]).at(at('2027-03-01T01:10:00Z'))).toEqual({ open: true });
  });

  it('refuses a bad window with E_JOB', () => {
    for (const windows of [
      [{ cron: '0 25 * * *', duration: '1h' }],
      [{ cron: '0 1 * * *', duration: '0s' }],
      [{ cron: '0 1 * * *', duration: '1h', timezone: 'Mars/Olympus' }],
      [{ cron: '0 1 * * *' }],
    ]) {
      expect(() => parseJob(job({ windows }), 'job'), JSON.stringify(windows)).toThrow(
        expect.objectContaining({ code: 'E_JOB' }),
      );
    }
  });
});

describe('stopping the daemon', () => {
  it('stops the running run at a checkpoint; the next daemon resumes it, sending only the rest', async () => {
    const clock = new FakeClock(T0);
    const spec = job({ schedule: { every: '10m' }, unfinished: 'rollback' });
    const first = new Daemon({ engine, jobs: [spec], clock, requestPollMs: 0 });
    let written = 0;
    let stopping: Promise<void> | undefined;
    target.hooks.beforeWrite = (_disk, _offset, length) => {
      written += length;
      stopping ??= first.stop();
    };
    const ended = nth<DaemonRunEndEvent>(first, 'run-end', 1);
    await first.start();
    await clock.whenSleeping(1);
    clock.advanceTo(T0 + 10 * MIN);
    const [stopped] = await ended;
    await stopping;
    expect(stopped).toMatchObject({ outcome: 'stopped', code: 'E_ABORTED' });
    const parked = (await store.listRuns()).find((run) => run.runId === stopped!.runId)!;
    expect(parked.state).toBe('transfer');
    expect(parked.stopped?.reason).toBe('stopped');
    expect((await store.loadSchedule('win'))?.lastOutcome?.outcome).toBe('stopped');
    const sentBefore = written;
    expect(sentBefore).toBeGreaterThan(0);

    // Even with `unfinished: rollback` (for crashes), a run the daemon stopped is resumed.
    written = 0;
    target.hooks.beforeWrite = (_disk, _offset, length) => {
      written += length;
    };
    const second = new Daemon({ engine, jobs: [spec], clock, requestPollMs: 0 });
    const resumed = nth<DaemonRunEndEvent>(second, 'run-end', 1);
    await second.start();
    const [end] = await resumed;
    await second.stop();
    expect(end).toMatchObject({ reason: 'resume', runId: stopped!.runId, outcome: 'completed' });
    expect(written).toBe(8 * MiB - sentBefore);
    expect(Buffer.compare(target.vms.get('vm1-replica')!.disks.get('a')!, source.vms.get('vm1')!.disks.get('a')!)).toBe(
      0,
    );
  });
});

describe('pause and resume requests in the state store', () => {
  it('are applied by a running daemon, persisted, and applied once', async () => {
    const clock = new FakeClock(T0);
    const daemon = new Daemon({ engine, jobs: [job({ schedule: { every: '1h' } })], clock, requestPollMs: 5 });
    const controls: boolean[] = [];
    const applied = () =>
      new Promise<void>((resolve) => daemon.once('control', (e) => resolve(void controls.push(e.paused))));
    await daemon.start();
    let next = applied();
    await store.saveScheduleRequest({ version: 1, job: 'win', paused: true, at: new Date(T0).toISOString() });
    await next;
    expect(daemon.states()[0]).toMatchObject({ paused: true, activity: 'paused' });
    expect((await store.loadSchedule('win'))?.paused).toBe(true);
    next = applied();
    await store.saveScheduleRequest({ version: 1, job: 'win', paused: false, at: new Date(T0 + 1).toISOString() });
    await next;
    await daemon.stop();
    expect(controls).toEqual([true, false]);
    expect((await store.loadSchedule('win'))?.paused).toBe(false);
  });
});
