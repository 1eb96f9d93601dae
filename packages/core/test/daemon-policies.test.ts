// The daemon's retry, hold and pause policies and the schedule syntax, with a scripted engine (each
// run resolves or throws what the test says) on a fake clock: the test moves the clock from one
// wait of the daemon to the next, never waiting for time.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  AuthError,
  backoffDelay,
  classifyError,
  Daemon,
  type DaemonEngine,
  type DaemonRunEndEvent,
  ERROR_CODES,
  FakeClock,
  FileStateStore,
  type JobSpecInput,
  parseJob,
  ReplicaModifiedError,
  type ReplikitError,
  type RunRecord,
  slotCalendar,
  TransportError,
} from '../src/index.js';

const T0 = 1_800_000_000_000;
let dir: string;
let store: FileStateStore;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'replikit-daemon-policies-'));
  store = new FileStateStore(join(dir, 'state'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

function job(options: Record<string, unknown>): JobSpecInput {
  return {
    name: 'policy',
    source: { driver: 'memsrc', vm: 'vm1' },
    target: { driver: 'memdst' },
    method: 'qhybrid',
    options,
  };
}

/** An engine whose runs end as `script` says, in turn (then succeed); it records when each started. */
function scripted(clock: FakeClock, script: Array<ReplikitError | 'ok'>): DaemonEngine & { starts: number[] } {
  const starts: number[] = [];
  return {
    store,
    starts,
    async run() {
      starts.push(clock.now());
      const next = script.shift() ?? 'ok';
      if (next !== 'ok') throw next;
      return { runId: `run-${starts.length}`, state: 'completed' } as RunRecord;
    },
    async resume(): Promise<RunRecord> {
      throw new Error('no run to resume');
    },
  };
}

async function driveUntil(clock: FakeClock, until: number): Promise<void> {
  for (;;) {
    await clock.whenSleeping(1);
    const next = clock.nextWake;
    if (next === undefined || next > until) return;
    clock.advanceToNext();
  }
}

describe('retries', () => {
  it('retries a transient failure with capped exponential backoff and jitter, then waits for the next slot', async () => {
    const clock = new FakeClock(T0);
    const failure = () => new TransportError('the link dropped');
    const engine = scripted(clock, [failure(), failure(), failure(), failure(), 'ok']);
    const ends: DaemonRunEndEvent[] = [];
    const daemon = new Daemon({
      engine,
      jobs: [job({ schedule: { every: '1h' }, retry: { attempts: 3, initialDelay: '10s', maxDelay: '15s' } })],
      clock,
      random: () => 0.5,
    });
    daemon.on('run-end', (e) => ends.push(e));
    await daemon.start();
    await driveUntil(clock, T0 + 3_700_000);
    await daemon.stop();
    const at = (t: number) => (t - T0) / 1000;
    // Delays 10 s, 20 s capped to 15 s, 15 s, each jittered to 3/4 (random 0.5): 7.5, 11.25, 11.25.
    expect(engine.starts.map(at)).toEqual([3600, 3607.5, 3618.75, 3630]);
    expect(ends.map((e) => e.errorClass)).toEqual(['transient', 'transient', 'transient', 'transient']);
    expect(ends.map((e) => e.retryAt !== undefined)).toEqual([true, true, true, false]);
    expect(daemon.states()[0]!.nextDue).toBe(new Date(T0 + 7_200_000).toISOString());
  });

  it('does not retry a permanent failure', async () => {
    const clock = new FakeClock(T0);
    const engine = scripted(clock, [new AuthError('the password was refused')]);
    const daemon = new Daemon({ engine, jobs: [job({ schedule: { every: '10s' } })], clock });
    await daemon.start();
    await driveUntil(clock, T0 + 15_000);
    const state = daemon.states()[0]!;
    await daemon.stop();
    expect(engine.starts).toEqual([T0 + 10_000]);
    expect(state.lastOutcome).toMatchObject({ outcome: 'failed', code: 'E_AUTH', errorClass: 'permanent' });
    expect(state.retryAt).toBeUndefined();
  });

  it('holds a job whose failure needs a decision until it is resumed', async () => {
    const clock = new FakeClock(T0);
    const engine = scripted(clock, [new ReplicaModifiedError('the replica was booted')]);
    const daemon = new Daemon({ engine, jobs: [job({ schedule: { every: '10s' }, catchUp: 'skip' })], clock });
    const held: string[] = [];
    daemon.on('held', (e) => held.push(e.code));
    await daemon.start();
    await driveUntil(clock, T0 + 10_000);
    expect(held).toEqual(['E_REPLICA_MODIFIED']);
    expect(engine.starts).toEqual([T0 + 10_000]); // nothing runs while held
    expect(daemon.states()[0]!.activity).toBe('held');
    expect((await store.loadSchedule('policy'))?.held?.code).toBe('E_REPLICA_MODIFIED');
    clock.advanceTo(T0 + 50_000); // a held job waits on no slot: the slots at 20-50 s pass unseen
    await daemon.resumeJob('policy'); // counts them missed; catchUp skip: no catch-up run
    await driveUntil(clock, T0 + 60_000);
    const state = daemon.states()[0]!;
    await daemon.stop();
    expect(engine.starts).toEqual([T0 + 10_000, T0 + 60_000]);
    expect(state.missedTotal).toBe(4);
  });
});

describe('an unfinished run at start', () => {
  it('is resumed first; one catch-up run follows for the slots missed meanwhile', async () => {
    const clock = new FakeClock(T0 + 25_000);
    const parsed = parseJob(job({ schedule: { every: '10s' } }));
    // What a daemon killed in a run at 10 s left: its schedule state and the run's journal.
    await store.saveSchedule({
      version: 1,
      job: 'policy',
      lastSlot: new Date(T0 + 10_000).toISOString(),
      attempt: 0,
      missedSlots: 0,
      missedTotal: 0,
      paused: false,
      activity: 'running',
      rpoLevel: 'unknown',
      updatedAt: new Date(T0 + 10_000).toISOString(),
    });
    const journal = {
      version: 2,
      runId: 'policy-killed',
      job: parsed,
      state: 'transfer',
      startedAt: new Date(T0).toISOString(),
      stages: {},
    };
    await store.saveRun(journal as never);
    const engine = scripted(clock, []);
    const resumed: string[] = [];
    engine.resume = async (runId) => {
      resumed.push(runId);
      await store.saveRun({ ...journal, state: 'completed' } as never);
      return { runId, state: 'completed' } as RunRecord;
    };
    const reasons: string[] = [];
    const daemon = new Daemon({ engine, jobs: [parsed], clock });
    daemon.on('run-start', (e) => reasons.push(e.reason));
    await daemon.start();
    await driveUntil(clock, T0 + 25_000);
    const state = daemon.states()[0]!;
    await daemon.stop();
    expect(resumed).toEqual(['policy-killed']);
    expect(reasons).toEqual(['resume', 'catch-up']);
    expect(engine.starts).toEqual([T0 + 25_000]);
    expect(state.missedTotal).toBe(1); // the slot at 20 s
  });
});

describe('a daemon that dies between deciding a run and starting it', () => {
  /**
   * A daemon on `store` that dies at its first save of a running job (just after it saved the
   * decision to run a slot, before its engine was called): that save never ends, nor does the
   * daemon (it is never stopped), as a killed process.
   */
  function dyingDaemon(clock: FakeClock, options: Record<string, unknown>) {
    let died!: () => void;
    const death = new Promise<void>((resolve) => {
      died = resolve;
    });
    const frozen = Object.create(store) as FileStateStore;
    frozen.saveSchedule = async (state) => {
      if (state.activity !== 'running') return store.saveSchedule(state);
      died();
      return new Promise<void>(() => undefined);
    };
    const engine = { ...scripted(clock, []), store: frozen };
    engine.run = async () => {
      throw new Error('a dead daemon started a run');
    };
    return { daemon: new Daemon({ engine, jobs: [job(options)], clock }), death };
  }

  it('the next daemon starts the run the dead one decided for a slot, neither losing nor repeating it', async () => {
    const clock = new FakeClock(T0);
    const first = dyingDaemon(clock, { schedule: { every: '10s' } });
    await first.daemon.start();
    await clock.whenSleeping(1);
    clock.advanceToNext(); // the slot at 10 s
    await first.death;
    clock.advanceTo(T0 + 15_000); // restarted before the next slot
    const engine = scripted(clock, []);
    const reasons: string[] = [];
    const second = new Daemon({ engine, jobs: [job({ schedule: { every: '10s' } })], clock });
    second.on('run-start', (e) => reasons.push(e.reason));
    await second.start();
    await driveUntil(clock, T0 + 20_000);
    const state = second.states()[0]!;
    await second.stop();
    // Without the decision kept, the slot at 10 s got no run and was not counted missed either.
    expect(engine.starts).toEqual([T0 + 15_000, T0 + 20_000]);
    expect(reasons).toEqual(['slot', 'slot']);
    expect(state.missedTotal).toBe(0);
  });

  it('a run already started from the decision is not started again', async () => {
    const clock = new FakeClock(T0 + 15_000);
    const parsed = parseJob(job({ schedule: { every: '10s' } }));
    // The decision (made when the job's last run was 'policy-old') and the run it started, completed.
    await store.saveSchedule({
      version: 1,
      job: 'policy',
      lastSlot: new Date(T0 + 10_000).toISOString(),
      due: { reason: 'slot', after: 'policy-old' },
      attempt: 0,
      missedSlots: 0,
      missedTotal: 0,
      paused: false,
      activity: 'running',
      rpoLevel: 'unknown',
      updatedAt: new Date(T0 + 10_000).toISOString(),
    });
    await store.saveJob({ name: 'policy', method: 'qhybrid', lastRunId: 'policy-new' } as never);
    const engine = scripted(clock, []);
    const second = new Daemon({ engine, jobs: [parsed], clock });
    await second.start();
    await driveUntil(clock, T0 + 20_000);
    await second.stop();
    expect(engine.starts).toEqual([T0 + 20_000]);
  });
});

describe('an unfinished run, rolled back by policy', () => {
  it('rolls the run back instead of resuming it, as no failure, then runs at its next slot', async () => {
    const clock = new FakeClock(T0 + 25_000);
    const parsed = parseJob(job({ schedule: { every: '10s' }, unfinished: 'rollback' }));
    const journal = {
      version: 2,
      runId: 'policy-killed',
      job: parsed,
      state: 'transfer',
      startedAt: new Date(T0).toISOString(),
      stages: {},
    };
    await store.saveRun(journal as never);
    const engine = scripted(clock, []);
    const calls: string[] = [];
    engine.resume = async (runId, options) => {
      calls.push(`${runId} rollback=${options.rollback}`);
      await store.saveRun({ ...journal, state: 'cancelled' } as never);
      return { runId, state: 'cancelled' } as RunRecord;
    };
    const ends: DaemonRunEndEvent[] = [];
    const daemon = new Daemon({ engine, jobs: [parsed], clock });
    daemon.on('run-end', (e) => ends.push(e));
    await daemon.start();
    await driveUntil(clock, T0 + 30_000);
    await daemon.stop();
    expect(calls).toEqual(['policy-killed rollback=true']);
    expect(engine.starts).toEqual([T0 + 30_000]);
    expect(ends.map((e) => `${e.reason} ${e.outcome} ${e.code ?? ''}`)).toEqual([
      'resume cancelled ',
      'slot completed ',
    ]);
  });
});

describe('a failing job loop', () => {
  it('is reported and started again 30 s later from its saved state', async () => {
    const clock = new FakeClock(T0);
    let failures = 1;
    const flaky = Object.create(store) as FileStateStore;
    flaky.saveSchedule = async (state) => {
      if (state.activity === 'running' && failures-- > 0) throw new Error('the disk is gone for a moment');
      return store.saveSchedule(state);
    };
    const engine = { ...scripted(clock, []), store: flaky };
    const starts: number[] = [];
    engine.run = async () => {
      starts.push(clock.now());
      return { runId: 'r', state: 'completed' } as RunRecord;
    };
    const errors: string[] = [];
    const daemon = new Daemon({ engine, jobs: [job({ schedule: { every: '10s' } })], clock });
    daemon.on('error', (e) => errors.push((e.error as Error).message));
    await daemon.start();
    await driveUntil(clock, T0 + 40_000);
    await daemon.stop();
    expect(errors).toEqual(['the disk is gone for a moment']);
    // The slot at 10 s failed before its run; the loop restarts at 40 s, catches up once.
    expect(starts).toEqual([T0 + 40_000]);
  });
});

describe('pause and resume', () => {
  it('a paused job starts no run, counts its slots as missed, and catches up once when resumed', async () => {
    const clock = new FakeClock(T0);
    const engine = scripted(clock, []);
    const daemon = new Daemon({ engine, jobs: [job({ schedule: '*/10 * * * * *' })], clock });
    await daemon.start();
    await driveUntil(clock, T0 + 10_000);
    await daemon.pauseJob('policy');
    clock.advanceTo(T0 + 40_000); // nothing waits on the slots while paused
    await daemon.resumeJob('policy');
    await driveUntil(clock, T0 + 40_000);
    const state = daemon.states()[0]!;
    await daemon.stop();
    expect(engine.starts).toEqual([T0 + 10_000, T0 + 40_000]);
    expect(state.missedTotal).toBe(3);
    expect(state.lastOutcome?.reason).toBe('catch-up');
  });
});

describe('schedule syntax', () => {
  const parse = (schedule: unknown) => parseJob(job({ schedule })).options.schedule;

  it('takes the old five-field cron, six fields with seconds, a time zone, and an interval', () => {
    expect(parse('0 */4 * * *')).toBe('0 */4 * * *');
    expect(parse('*/2 * * * * *')).toBe('*/2 * * * * *');
    expect(parse({ cron: '0 2 * * *', timezone: 'Europe/Paris' })).toEqual({
      cron: '0 2 * * *',
      timezone: 'Europe/Paris',
    });
    expect(parse({ every: '1m30s' })).toEqual({ every: '1m30s' });
    // A parsed job parses again to the same job (the engine parses what the daemon parsed).
    const once = parseJob(job({ schedule: { every: 90 }, rpo: 30, retry: { initialDelay: 5 } }));
    expect(parseJob(once)).toEqual(once);
    expect(slotCalendar(once.options.schedule!).next(0)).toBe(90_000);
  });

  it('refuses a bad expression, time zone or interval with E_JOB', () => {
    for (const bad of [
      '* * *',
      '61 * * * *',
      { cron: '0 2 * * *', timezone: 'Mars/Olympus' },
      { every: '10x' },
      { every: '0.5s' },
    ]) {
      expect(() => parse(bad)).toThrow(expect.objectContaining({ code: 'E_JOB' }));
    }
  });

  it('puts cron slots in the job time zone', () => {
    const calendar = slotCalendar(parse({ cron: '0 2 * * *', timezone: 'Europe/Paris' })!);
    // 02:00 in Paris in January is 01:00 UTC.
    expect(new Date(calendar.next(Date.parse('2027-01-10T12:00:00Z'))!).toISOString()).toBe('2027-01-11T01:00:00.000Z');
    expect(calendar.between(Date.parse('2027-01-10T00:00:00Z'), Date.parse('2027-01-13T00:00:00Z')).count).toBe(3);
  });
});

describe('error classes and backoff', () => {
  it('classifies every error code', () => {
    for (const code of ERROR_CODES) expect(['transient', 'permanent', 'needs-decision']).toContain(classifyError(code));
    expect(classifyError('E_FROM_THE_FUTURE')).toBe('permanent');
  });

  it('caps the delay and keeps the jitter in its upper half', () => {
    const retry = { attempts: 10, initialDelay: 1000, maxDelay: 60_000 };
    expect(backoffDelay(1, retry, () => 0)).toBe(500);
    expect(backoffDelay(3, retry, () => 0.999_999)).toBe(4000);
    expect(backoffDelay(30, retry, () => 0)).toBe(30_000);
  });
});
