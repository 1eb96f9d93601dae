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

const job = {
  name: 'pg-unit',
  source: { driver: 'memsrc', vm: 'vm1' },
  target: { driver: 'memdst' },
  method: 'qhybrid',
  blockSize: 65536,
} as const;

/** `driver`, kept open across runs (the engine closes the drivers it was given after each run). */
function keptOpen<T extends object>(driver: T): T {
  return new Proxy(driver, {
    get(target, key) {
      if (key === 'close') return async () => undefined;
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
    .register(defineDriver({ kind: 'memdst', capabilities: target.capabilities, create: () => keptOpen(target) }));
});
afterEach(async () => {
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
});
