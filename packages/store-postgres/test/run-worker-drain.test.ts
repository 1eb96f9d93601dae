// A run worker that is stopping must not start a run: pg-boss still hands a worker the request
// its fetch had in flight when `offWork` was called, and that run would start on a worker whose
// queue and store are about to close.
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseJob, ReplicationEngine, type RunRecord, registerDriver } from '@replikit/core';
import { createFileVM, fileDriver } from '@replikit/driver-file';
import { localTransport } from '@replikit/transport';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openRunQueue, RUN_QUEUE, type RunRequest } from '../src/cluster/run-queue.js';
import { PostgresStateStore, RunWorker } from '../src/index.js';
import { startTestPostgres, type TestPostgres } from '../src/testing/index.js';

let server: TestPostgres;
let dir: string;
beforeAll(async () => {
  registerDriver(fileDriver, { replace: true });
  server = await startTestPostgres();
  dir = await mkdtemp(join(tmpdir(), 'replikit-run-worker-drain-'));
});
afterAll(async () => {
  await server?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('RunWorker', () => {
  it('leaves no listener on its drain signal after each run (a long-lived worker would leak one per run)', async () => {
    const url = await server.createDatabase();
    const vms = join(dir, 'vms-many');
    await createFileVM(vms, { name: 'many', disks: [{ id: 'system', size: 64 * 1024 }] });
    const job = parseJob({
      name: 'many',
      source: { driver: 'file', root: vms, vm: 'many', reflink: false },
      target: { driver: 'file', root: join(dir, 'replicas-many'), reflink: false },
      method: 'qhybrid',
    });
    const store = await PostgresStateStore.open({ connectionString: url });
    const boss = await openRunQueue({ connectionString: url, retryDelaySeconds: 1, superviseIntervalSeconds: 1 });
    const engine = new ReplicationEngine({ transport: localTransport(), stateStore: store, leaseTtlMs: 5000 });
    const warnings: string[] = [];
    const onWarning = (warning: Error) => {
      if (warning.name === 'MaxListenersExceededWarning') warnings.push(warning.message);
    };
    process.on('warning', onWarning);
    const worker = new RunWorker(engine, store, boss, 'many', (_request, outcome) => ended(outcome));
    let ended: (outcome: { record?: RunRecord; error?: unknown }) => void = () => undefined;
    try {
      await worker.start(1, 0.5);
      // Node warns when an AbortSignal has more than 10 listeners: 12 runs, one after the other.
      for (let i = 0; i < 12; i++) {
        const end = new Promise<{ record?: RunRecord; error?: unknown }>((resolve) => {
          ended = resolve;
        });
        await boss.send(RUN_QUEUE, { kind: 'run', requestId: randomUUID(), job } satisfies RunRequest);
        expect((await end).record?.state).toBe('completed');
      }
      // The warning is emitted on the next tick after the listener that crosses the limit.
      await new Promise((resolve) => setImmediate(resolve));
      expect(warnings).toEqual([]);
    } finally {
      process.off('warning', onWarning);
      await worker.stop();
      await boss.stop({ graceful: false, wait: false }).catch(() => undefined);
      await engine.close?.();
      await store.close();
    }
  }, 120_000);

  it('stop: a request delivered after stop began goes back to the queue and starts no run', async () => {
    const url = await server.createDatabase();
    const vms = join(dir, 'vms');
    await createFileVM(vms, { name: 'late', disks: [{ id: 'system', size: 1024 * 1024 }] });
    const job = parseJob({
      name: 'late',
      source: { driver: 'file', root: vms, vm: 'late', reflink: false },
      target: { driver: 'file', root: join(dir, 'replicas'), reflink: false },
      method: 'qhybrid',
    });
    const store = await PostgresStateStore.open({ connectionString: url });
    const boss = await openRunQueue({ connectionString: url, retryDelaySeconds: 1, superviseIntervalSeconds: 1 });
    const engine = new ReplicationEngine({ transport: localTransport(), stateStore: store, leaseTtlMs: 5000 });
    try {
      const request: RunRequest = { kind: 'run', requestId: randomUUID(), job };
      await boss.send(RUN_QUEUE, request, { id: request.requestId });
      let ended: (outcome: { record?: RunRecord; error?: unknown }) => void = () => undefined;
      const end = new Promise<{ record?: RunRecord; error?: unknown }>((resolve) => {
        ended = resolve;
      });
      const worker = new RunWorker(engine, store, boss, 'draining', (_request, outcome) => ended(outcome));
      // `start` leaves the queue's first fetch in flight; `stop` comes before it returns the request.
      await worker.start(1, 0.5);
      await worker.stop();
      // Wait for the event: the worker ended the request its fetch returned.
      const outcome = await end;
      expect(await store.listRuns()).toEqual([]);
      expect(outcome.record).toBeUndefined();
      expect((outcome.error as { code?: string } | undefined)?.code).toBe('E_CONFLICT');
      const { rows } = await store.query<{ run_id: string | null }>(
        'SELECT run_id FROM replikit.run_requests WHERE request_id = $1',
        [request.requestId],
      );
      expect(rows.filter((row) => row.run_id !== null)).toEqual([]);
    } finally {
      await boss.stop({ graceful: false, wait: false }).catch(() => undefined);
      await engine.close?.();
      await store.close();
    }
  }, 60_000);
});
