// A worker notes a request's run id at the run's first transition (`created` → `validate`), but
// the engine journals the run only at its first save, a little later. A worker killed in between
// leaves `run_requests.run_id` naming a run that does not exist; the request's next delivery must
// start the job's run, not try to resume that run (which answered E_NOT_FOUND). Seen with a worker
// SIGKILLed as soon as its run held its run-limit slots (run-limits.test.ts).
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
  dir = await mkdtemp(join(tmpdir(), 'replikit-run-worker-unjournaled-'));
});
afterAll(async () => {
  await server?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('RunWorker: a request whose noted run was never journaled', () => {
  it('starts the job’s run (once) instead of failing to resume a run that does not exist', async () => {
    const url = await server.createDatabase();
    const vms = join(dir, 'vms');
    await createFileVM(vms, { name: 'ghost', disks: [{ id: 'system', size: 256 * 1024 }] });
    const job = parseJob({
      name: 'ghost',
      source: { driver: 'file', root: vms, vm: 'ghost', reflink: false },
      target: { driver: 'file', root: join(dir, 'replicas'), reflink: false },
      method: 'qhybrid',
    });
    const store = await PostgresStateStore.open({ connectionString: url });
    const boss = await openRunQueue({ connectionString: url, retryDelaySeconds: 1, superviseIntervalSeconds: 1 });
    const engine = new ReplicationEngine({ transport: localTransport(), stateStore: store, leaseTtlMs: 5000 });
    let ended!: (outcome: { record?: RunRecord; error?: unknown }) => void;
    const end = new Promise<{ record?: RunRecord; error?: unknown }>((resolve) => {
      ended = resolve;
    });
    const worker = new RunWorker(engine, store, boss, 'w2', (_request, outcome) => ended(outcome));
    try {
      // What a worker killed between the run's first transition and its first save leaves behind.
      const requestId = randomUUID();
      const ghost = 'ghost-20261207T000000Z-dead01';
      await store.query(
        `INSERT INTO replikit.run_requests (request_id, job, kind, worker, run_id) VALUES ($1, $2, 'run', 'w1', $3)`,
        [requestId, job.name, ghost],
      );
      await worker.start(1, 0.5);
      await boss.send(RUN_QUEUE, { kind: 'run', requestId, job } satisfies RunRequest, { id: requestId });
      const outcome = await end;
      expect((outcome.error as Error | undefined)?.message).toBeUndefined();
      expect(outcome.record?.state).toBe('completed');
      const runs = await store.listRuns();
      expect(runs.map((run) => run.runId)).toEqual([outcome.record!.runId]);
      const { rows } = await store.query<{ run_id: string }>(
        'SELECT run_id FROM replikit.run_requests WHERE request_id = $1',
        [requestId],
      );
      // The request now names the run it started.
      expect(rows[0]?.run_id).toBe(outcome.record!.runId);
    } finally {
      await worker.stop();
      await boss.stop({ graceful: false, wait: true }).catch(() => undefined);
      await engine.close();
      await store.close();
    }
  }, 60_000);
});
