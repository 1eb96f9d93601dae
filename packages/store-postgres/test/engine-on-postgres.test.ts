import { DriverRegistry, defineDriver, isReplikitError, ReplicationEngine } from '@replikit/core';
import { createMemoryDriver } from '@replikit/core/testing';
import { localTransport } from '@replikit/transport';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { PostgresStateStore } from '../src/index.js';
import { startTestPostgres, type TestPostgres } from '../src/testing/index.js';

let server: TestPostgres;
let store: PostgresStateStore;
let registry: DriverRegistry;
let source: ReturnType<typeof createMemoryDriver>;
let target: ReturnType<typeof createMemoryDriver>;
/** Called before the target's `createRestorePoint` (the commit), when set. */
let beforeCommit: (() => Promise<void>) | undefined;

const job = {
  name: 'pg-unit',
  source: { driver: 'memsrc', vm: 'vm1' },
  target: { driver: 'memdst' },
  method: 'qhybrid',
  blockSize: 65536,
} as const;

/** `driver`, kept open across runs (the engine closes the drivers it was given after each run). */
function keptOpen<T extends object>(driver: T, before: Record<string, () => Promise<void>> = {}): T {
  return new Proxy(driver, {
    get(target, key) {
      if (key === 'close') return async () => undefined;
      const hook = typeof key === 'string' ? before[key] : undefined;
      if (hook) {
        const method = Reflect.get(target, key, target) as (...args: unknown[]) => Promise<unknown>;
        return async (...args: unknown[]) => {
          await hook();
          return method.apply(target, args);
        };
      }
      const value = Reflect.get(target, key, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

beforeAll(async () => {
  server = await startTestPostgres();
});
afterAll(async () => {
  await server?.stop();
});
beforeEach(async () => {
  store = await PostgresStateStore.open({ connectionString: await server.createDatabase() });
  source = createMemoryDriver();
  target = createMemoryDriver();
  source.addVM('vm1', [{ id: 'a', size: 1024 * 1024 }]);
  registry = new DriverRegistry()
    .register(defineDriver({ kind: 'memsrc', capabilities: source.capabilities, create: () => keptOpen(source) }))
    .register(
      defineDriver({
        kind: 'memdst',
        capabilities: target.capabilities,
        create: () => keptOpen(target, { createRestorePoint: async () => beforeCommit?.() }),
      }),
    );
});
afterEach(async () => {
  beforeCommit = undefined;
  await store.close();
});

const engine = () => new ReplicationEngine({ transport: localTransport(), stateStore: store, drivers: registry });

describe('the engine on the PostgreSQL store', () => {
  it('runs a job twice: the journal, the job record and the replica', async () => {
    const first = await engine().run(job);
    expect(first.state).toBe('completed');
    source.guestWrite('vm1', 'a', 4096, new Uint8Array(70_000).fill(7));
    const second = await engine().run(job);
    expect(second.state).toBe('completed');
    expect((await store.listRuns()).map((r) => [r.runId, r.state])).toEqual([
      [first.runId, 'completed'],
      [second.runId, 'completed'],
    ]);
    expect(await store.findUnfinished(job.name)).toBeUndefined();
    expect((await store.loadJob(job.name))?.lastCompletedRunId).toBe(second.runId);
    expect(second.stats.bytesSent).toBeLessThan(1024 * 1024);
  });

  it('a run left unfinished by a dead worker blocks the job until it is resumed or abandoned', async () => {
    const first = await engine().run(job);
    const journal = await store.loadRun(first.runId);
    if (!journal) throw new Error('no journal');
    await store.saveRun({
      ...journal,
      runId: 'pg-unit-stranded',
      state: 'transfer',
      pid: 2 ** 22 + 1,
      outcome: undefined,
    });
    const refused = await engine()
      .run(job)
      .catch((error: unknown) => error);
    expect(isReplikitError(refused, 'E_CONFLICT')).toBe(true);
    expect((refused as Error).message).toContain('pg-unit-stranded');
    expect((await engine().resume('pg-unit-stranded', { abandon: true })).state).toBe('cancelled');
    expect((await engine().run(job)).state).toBe('completed');
  });

  it('a second engine on another connection cannot run the job while the first holds its lock', async () => {
    const release = await store.lockJob(job.name, 'held-elsewhere');
    const other = await PostgresStateStore.open({ connectionString: store.connectionString });
    try {
      const refused = await new ReplicationEngine({ transport: localTransport(), stateStore: other, drivers: registry })
        .run(job)
        .catch((error: unknown) => error);
      expect(isReplikitError(refused, 'E_CONFLICT')).toBe(true);
      expect((refused as Error).message).toContain('held-elsewhere');
    } finally {
      await release();
      await other.close();
    }
  });

  it('a run takes a lease on its replica, fences its journal with the epoch and releases it', async () => {
    const run = await engine().run(job);
    expect(run.state).toBe('completed');
    const { rows } = await store.query<{ lease_epoch: string; released: boolean }>(
      `SELECT r.lease_epoch, l.expires_at <= clock_timestamp() AS released
       FROM replikit.runs r JOIN replikit.replica_leases l ON l.replica = r.job AND l.epoch = r.lease_epoch
       WHERE r.run_id = $1`,
      [run.runId],
    );
    expect(rows).toHaveLength(1);
    expect(rows[0]?.released).toBe(true);
  });

  it('a run whose lease another worker took before its commit is journaled no further (E_LEASE_LOST)', async () => {
    const other = await PostgresStateStore.open({ connectionString: store.connectionString });
    let taken: number | undefined;
    beforeCommit = async () => {
      // The lease ends under the run (as if its worker had been paused past the TTL) and another takes it.
      await other.query('UPDATE replikit.replica_leases SET expires_at = clock_timestamp() WHERE replica = $1', [
        job.name,
      ]);
      taken = (await other.leaseReplica(job.name, { ttlMs: 60_000 })).epoch;
    };
    try {
      const outcome = await engine()
        .run(job)
        .then((record) => record.error?.code ?? record.state)
        .catch((error: unknown) => (isReplikitError(error) ? error.code : String(error)));
      expect(outcome).toBe('E_LEASE_LOST');
      expect(taken).toBeDefined();
      const journaled = await other.findUnfinished(job.name);
      expect(journaled?.state).not.toBe('completed');
      expect(journaled?.stages.commit).toBeUndefined();
    } finally {
      await other.close();
    }
  });
});
