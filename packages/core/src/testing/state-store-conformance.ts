import { setTimeout as pause } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import type { RunJournal } from '../engine/run-journal.js';
import type { RunState } from '../engine/run-state.js';
import type { StateStore } from '../engine/state-store.js';
import { isReplikitError } from '../errors.js';
import type { ScheduleState } from '../schedule/schedule-state.js';

/** Options of {@link runStateStoreConformance}. */
export interface StateStoreConformanceOptions {
  /** The store's name in the `describe` title. */
  name: string;
  /** Makes a new, empty store. */
  create(): Promise<StateStore>;
  /**
   * A second client of the same store, as another process or machine would open it. Cases that
   * need two clients (locks, leases) use it.
   */
  reopen(store: StateStore): Promise<StateStore>;
  /** Closes a store made by {@link create} or {@link reopen} (connections, handles). */
  close?(store: StateStore): Promise<void>;
}

/** A journal of run `runId` of job `job` in `state`, started at `startedAt`. */
export function sampleJournal(runId: string, job: string, state: RunState, startedAt: string): RunJournal {
  return {
    version: 2,
    runId,
    job: {
      name: job,
      source: { driver: 'memsrc', vm: 'vm1' },
      target: { driver: 'memdst' },
      method: 'qhybrid',
      blockSize: 65536,
    },
    state,
    startedAt,
    updatedAt: startedAt,
    pid: 4242,
    host: 'worker-a',
    history: [{ state: 'created', at: startedAt }],
    blockSize: 65536,
    digest: 'xxh128',
    disks: [],
    stats: { bytesSent: 12.5, note: 'ünïcode ✓' },
    warnings: [],
    stages: {},
  } as unknown as RunJournal;
}

function schedule(job: string, attempt: number): ScheduleState {
  return {
    version: 1,
    job,
    attempt,
    missedSlots: 0,
    missedTotal: 0,
    paused: false,
    nextDue: '2026-12-07T05:00:00.000Z',
    activity: 'waiting',
    rpoLevel: 'unknown',
    updatedAt: '2026-12-07T04:00:00.000Z',
  };
}

/** Resolves to the error `promise` rejects with; fails the test when it resolves. */
async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => {
      throw new Error('expected a rejection');
    },
    (error: unknown) => error,
  );
}

/**
 * The behaviour the engine and the daemon rely on from a {@link StateStore}, as a vitest
 * `describe` block: run journals replaced whole and listed oldest first, the oldest unfinished run
 * of a job, job records, schedule states and requests, job locks that exclude a second client
 * until released, and, for a store with {@link StateStore.leaseReplica}, leases whose epochs grow,
 * that exclude a second client until they expire or are released, that heartbeats keep alive, and
 * that fence journal writes (`E_LEASE_LOST` for a stale epoch).
 *
 * @example
 * ```ts
 * runStateStoreConformance({
 *   name: 'file',
 *   create: async () => new FileStateStore(await mkdtemp(join(tmpdir(), 'store-'))),
 *   reopen: async (store) => new FileStateStore((store as FileStateStore).dir),
 * });
 * ```
 */
export function runStateStoreConformance(options: StateStoreConformanceOptions): void {
  const opened: StateStore[] = [];
  const create = async () => {
    const store = await options.create();
    opened.push(store);
    return store;
  };
  const reopen = async (store: StateStore) => {
    const other = await options.reopen(store);
    opened.push(other);
    return other;
  };
  afterEach(async () => {
    for (const store of opened.splice(0)) await options.close?.(store);
  });

  describe(`state store conformance: ${options.name}`, () => {
    it('saves, replaces and loads run journals; lists them oldest first', async () => {
      const store = await create();
      expect(await store.loadRun('nope-1')).toBeUndefined();
      const late = sampleJournal('job-a-2', 'job-a', 'transfer', '2026-12-07T04:00:02.000Z');
      const early = sampleJournal('job-b-1', 'job-b', 'completed', '2026-12-07T04:00:01.000Z');
      await store.saveRun(late);
      await store.saveRun(early);
      expect(await store.loadRun('job-a-2')).toEqual(late);
      const moved = { ...late, state: 'commit' as const, updatedAt: '2026-12-07T04:00:03.000Z' };
      await store.saveRun(moved);
      expect(await store.loadRun('job-a-2')).toEqual(moved);
      expect((await store.listRuns()).map((r) => r.runId)).toEqual(['job-b-1', 'job-a-2']);
      expect(await (await reopen(store)).loadRun('job-a-2')).toEqual(moved);
    });

    it('finds the oldest unfinished run of a job, and none once it ended', async () => {
      const store = await create();
      const find = (job: string) => store.findUnfinished?.(job) ?? Promise.resolve(undefined);
      if (!store.findUnfinished) return;
      await store.saveRun(sampleJournal('a-3', 'a', 'transfer', '2026-12-07T04:00:03.000Z'));
      await store.saveRun(sampleJournal('a-2', 'a', 'plan', '2026-12-07T04:00:02.000Z'));
      await store.saveRun(sampleJournal('a-1', 'a', 'completed', '2026-12-07T04:00:01.000Z'));
      await store.saveRun(sampleJournal('b-1', 'b', 'transfer', '2026-12-07T04:00:00.000Z'));
      expect((await find('a'))?.runId).toBe('a-2');
      await store.saveRun(sampleJournal('a-2', 'a', 'failed', '2026-12-07T04:00:02.000Z'));
      expect((await find('a'))?.runId).toBe('a-3');
      await store.saveRun(sampleJournal('a-3', 'a', 'cancelled', '2026-12-07T04:00:03.000Z'));
      expect(await find('a')).toBeUndefined();
      expect((await find('b'))?.runId).toBe('b-1');
      expect(await find('c')).toBeUndefined();
    });

    it('saves and loads job records', async () => {
      const store = await create();
      expect(await store.loadJob('j')).toBeUndefined();
      const record = { name: 'j', method: 'qhybrid', lastRunId: 'j-1', updatedAt: '2026-12-07T04:00:00.000Z' };
      await store.saveJob(record);
      await store.saveJob({ ...record, lastRunId: 'j-2' });
      expect(await store.loadJob('j')).toEqual({ ...record, lastRunId: 'j-2' });
    });

    it('saves, loads and lists schedule states and requests', async () => {
      const store = await create();
      if (!store.saveSchedule || !store.loadSchedule || !store.listSchedules) return;
      expect(await store.loadSchedule('x')).toBeUndefined();
      await store.saveSchedule(schedule('zeta', 0));
      await store.saveSchedule(schedule('alpha', 1));
      await store.saveSchedule(schedule('alpha', 2));
      expect(await store.loadSchedule('alpha')).toEqual(schedule('alpha', 2));
      expect((await store.listSchedules()).map((s) => [s.job, s.attempt])).toEqual([
        ['alpha', 2],
        ['zeta', 0],
      ]);
      if (!store.saveScheduleRequest || !store.loadScheduleRequest) return;
      expect(await store.loadScheduleRequest('alpha')).toBeUndefined();
      await store.saveScheduleRequest({ version: 1, job: 'alpha', paused: true, at: '2026-12-07T04:00:00.000Z' });
      await store.saveScheduleRequest({ version: 1, job: 'alpha', paused: false, at: '2026-12-07T04:00:01.000Z' });
      expect(await store.loadScheduleRequest('alpha')).toEqual({
        version: 1,
        job: 'alpha',
        paused: false,
        at: '2026-12-07T04:00:01.000Z',
      });
      expect((await store.listSchedules()).map((s) => s.job)).toEqual(['alpha', 'zeta']);
    });

    it("a job's lock excludes another client until released", async () => {
      const store = await create();
      const other = await reopen(store);
      const release = await store.lockJob('locked', 'locked-1');
      const refused = await rejection(other.lockJob('locked', 'locked-2'));
      expect(isReplikitError(refused, 'E_CONFLICT')).toBe(true);
      const otherJob = await other.lockJob('free', 'free-1');
      await release();
      const again = await other.lockJob('locked', 'locked-2');
      await again();
      await otherJob();
    });

    describe('replica leases (stores with leaseReplica)', () => {
      it('a live lease excludes another client; a released one is taken with a greater epoch', async () => {
        const store = await create();
        if (!store.leaseReplica) return;
        const other = await reopen(store);
        const first = await store.leaseReplica('r1', { ttlMs: 60_000, owner: 'worker-a' });
        expect(first).toMatchObject({ replica: 'r1', owner: 'worker-a' });
        const refused = await rejection(other.leaseReplica!('r1', { ttlMs: 60_000, owner: 'worker-b' }));
        expect(isReplikitError(refused, 'E_CONFLICT')).toBe(true);
        expect((refused as Error).message).toContain('worker-a');
        await first.release();
        const second = await other.leaseReplica!('r1', { ttlMs: 60_000, owner: 'worker-b' });
        expect(second.epoch).toBeGreaterThan(first.epoch);
        const elsewhere = await store.leaseReplica('r2', { ttlMs: 60_000 });
        expect(elsewhere.epoch).not.toBe(second.epoch);
      });

      it('a write under the current lease is kept; one under a stale epoch is refused with E_LEASE_LOST', async () => {
        const store = await create();
        if (!store.leaseReplica) return;
        const other = await reopen(store);
        const run = sampleJournal('r-1', 'r', 'transfer', '2026-12-07T04:00:00.000Z');
        const stale = await store.leaseReplica('r', { ttlMs: 1 });
        // Wait for the event: the 1 ms lease has expired once another client can take it.
        let current = await other.leaseReplica!('r', { ttlMs: 60_000 }).catch(() => undefined);
        while (!current) {
          await pause(5);
          current = await other.leaseReplica!('r', { ttlMs: 60_000 }).catch(() => undefined);
        }
        await other.saveRun(run, { fence: { replica: 'r', epoch: current.epoch } });
        const late = { ...run, state: 'commit' as const };
        const refused = await rejection(store.saveRun(late, { fence: { replica: 'r', epoch: stale.epoch } }));
        expect(isReplikitError(refused, 'E_LEASE_LOST')).toBe(true);
        expect((refused as { details: unknown }).details).toMatchObject({ replica: 'r', epoch: stale.epoch });
        const heartbeat = await rejection(stale.heartbeat());
        expect(isReplikitError(heartbeat, 'E_LEASE_LOST')).toBe(true);
        // A write with no fence cannot replace a journal written under a lease either.
        expect(await rejection(store.saveRun(late))).toBeInstanceOf(Error);
        expect((await other.loadRun('r-1'))?.state).toBe('transfer');
        // A lease that was released fences its holder's writes as well.
        await current.release();
        const released = await rejection(other.saveRun(late, { fence: { replica: 'r', epoch: current.epoch } }));
        expect(isReplikitError(released, 'E_LEASE_LOST')).toBe(true);
        expect((await other.loadRun('r-1'))?.state).toBe('transfer');
      });

      it("a job's record written under a stale lease is refused with E_LEASE_LOST and left as it was", async () => {
        const store = await create();
        if (!store.leaseReplica) return;
        const other = await reopen(store);
        const record = { name: 'jf', method: 'qhybrid', lastRunId: 'jf-1', updatedAt: '2026-12-07T04:00:00.000Z' };
        const stale = await store.leaseReplica('jf', { ttlMs: 1 });
        let current = await other.leaseReplica!('jf', { ttlMs: 60_000 }).catch(() => undefined);
        while (!current) {
          await pause(5);
          current = await other.leaseReplica!('jf', { ttlMs: 60_000 }).catch(() => undefined);
        }
        await other.saveJob(record, { fence: { replica: 'jf', epoch: current.epoch } });
        const refused = await rejection(
          store.saveJob({ ...record, lastRunId: 'jf-late' }, { fence: { replica: 'jf', epoch: stale.epoch } }),
        );
        expect(isReplikitError(refused, 'E_LEASE_LOST')).toBe(true);
        expect((await other.loadJob('jf'))?.lastRunId).toBe('jf-1');
        await current.release();
      });

      it('heartbeats keep a lease alive past its TTL', async () => {
        const store = await create();
        if (!store.leaseReplica) return;
        const other = await reopen(store);
        const ttlMs = 1500;
        const lease = await store.leaseReplica('hb', { ttlMs });
        const firstExpiry = Date.parse(lease.expiresAt);
        // Each turn renews the lease, then another client tries to take it at once: one round
        // trip, far below the TTL. Turns go on until the lease has lived past its first TTL by the
        // store's clock (the expiry a heartbeat returns is the store's time plus the TTL).
        let turns = 0;
        while (Date.parse(lease.expiresAt) - ttlMs <= firstExpiry + 200) {
          await lease.heartbeat();
          const refused = await rejection(other.leaseReplica!('hb', { ttlMs }));
          expect(isReplikitError(refused, 'E_CONFLICT')).toBe(true);
          turns++;
          await pause(50);
        }
        expect(turns).toBeGreaterThan(1);
        await store.saveRun(sampleJournal('hb-1', 'hb', 'transfer', '2026-12-07T04:00:00.000Z'), {
          fence: { replica: 'hb', epoch: lease.epoch },
        });
        expect((await other.loadRun('hb-1'))?.state).toBe('transfer');
      });
    });
  });
}
