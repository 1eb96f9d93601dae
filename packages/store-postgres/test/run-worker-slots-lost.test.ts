// A run's run-limit slots live as long as their connection: when it is lost (the server ended the
// session, the network cut it), the slots are gone, so the run must stop at its next checkpoint
// (unfinished, resumable) instead of going on outside the limit.
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isReplikitError, parseJob, ReplicationEngine, type RunRecord, registerDriver } from '@replikit/core';
import { testPattern } from '@replikit/core/testing';
import { createFileVM, fileDriver, openGuestDisk } from '@replikit/driver-file';
import { localTransport } from '@replikit/transport';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openRunQueue, RUN_QUEUE, type RunRequest } from '../src/cluster/run-queue.js';
import { PostgresStateStore, RunWorker } from '../src/index.js';
import { startTestPostgres, type TestPostgres } from '../src/testing/index.js';

const MiB = 1024 * 1024;
let server: TestPostgres;
let dir: string;
beforeAll(async () => {
  registerDriver(fileDriver, { replace: true });
  server = await startTestPostgres();
  dir = await mkdtemp(join(tmpdir(), 'replikit-slots-lost-'));
});
afterAll(async () => {
  await server?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('RunWorker: a run whose run-limit slots are lost', () => {
  it('stops at a checkpoint (unfinished, stop reason "run-limit slots lost") when the slots’ connection ends', async () => {
    const url = await server.createDatabase();
    const vms = join(dir, 'vms');
    const size = 16 * MiB;
    await createFileVM(vms, { name: 'slow', disks: [{ id: 'system', size }] });
    const guest = await openGuestDisk(vms, 'slow', 'system');
    for (let at = 0; at < size; at += 4 * MiB) await guest.write(at, testPattern(at / MiB + 1, 4 * MiB));
    await guest.close();
    const job = parseJob({
      name: 'slow',
      source: { driver: 'file', root: vms, vm: 'slow', reflink: false },
      target: { driver: 'file', root: join(dir, 'replicas'), reflink: false },
      method: 'qhybrid',
      // About eight seconds: the connection is ended while the transfer goes on.
      options: { bandwidthLimit: 2 * MiB },
    });
    const store = await PostgresStateStore.open({ connectionString: url });
    const boss = await openRunQueue({ connectionString: url, retryDelaySeconds: 1, superviseIntervalSeconds: 1 });
    const engine = new ReplicationEngine({ transport: localTransport(), stateStore: store, leaseTtlMs: 5000 });
    let ended!: (outcome: { record?: RunRecord; error?: unknown }) => void;
    const end = new Promise<{ record?: RunRecord; error?: unknown }>((resolve) => {
      ended = resolve;
    });
    const worker = new RunWorker(engine, store, boss, 'w1', (_request, outcome) => ended(outcome), { perTarget: 1 });
    const admin = new pg.Client({ connectionString: url });
    await admin.connect();
    try {
      const transferring = new Promise<string>((resolve) => {
        engine.on('progress', (e) => resolve(e.runId));
      });
      await worker.start(1, 0.5);
      await boss.send(RUN_QUEUE, { kind: 'run', requestId: randomUUID(), job } satisfies RunRequest);
      // Wait for the event: the run transfers (it holds its slot by then).
      const runId = await transferring;
      const { rows } = await admin.query<{ ended: boolean }>(
        `SELECT pg_terminate_backend(pid) AS ended FROM pg_stat_activity WHERE application_name = 'replikit-slots'`,
      );
      expect(rows.map((r) => r.ended)).toEqual([true]);
      const outcome = await end;
      expect(outcome.record).toBeUndefined();
      expect(isReplikitError(outcome.error, 'E_ABORTED')).toBe(true);
      expect((outcome.error as { details?: { stopped?: string } }).details?.stopped).toBe('run-limit slots lost');
      const journal = await store.loadRun(runId);
      expect(journal?.state).not.toBe('completed');
      expect(journal?.stopped).toBeDefined();
      console.log(`run ${runId} stopped in '${journal?.state}' after its slots' connection ended`);
    } finally {
      await admin.end();
      await worker.stop();
      await boss.stop({ graceful: false, wait: true }).catch(() => undefined);
      await engine.close();
      await store.close();
    }
  }, 60_000);
});
