import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PostgresStateStore } from '../src/index.js';
import { startTestPostgres, type TestPostgres } from '../src/testing/index.js';
import { journalOf } from './helpers/journal-of.js';

let server: TestPostgres;
beforeAll(async () => {
  server = await startTestPostgres();
});
afterAll(async () => {
  await server?.stop();
});

interface WorkerEvent {
  event: 'leased' | 'wrote' | 'refused';
  what?: 'write' | 'heartbeat';
  epoch?: number;
  step?: number;
  code?: string;
}

/** Starts the lease worker; `next(kind)` resolves with its next event of that kind. */
function startWorker(url: string, replica: string, ttlMs: number) {
  const child: ChildProcess = spawn(
    process.execPath,
    [
      '--conditions=@replikit/source',
      '--import',
      'tsx',
      fileURLToPath(new URL('./helpers/lease-worker.ts', import.meta.url)),
      url,
      replica,
      String(ttlMs),
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const events: WorkerEvent[] = [];
  const waiting: Array<{ kind: string; resolve: (e: WorkerEvent) => void; reject: (e: Error) => void }> = [];
  let exited: Error | undefined;
  child.on('exit', (code, signal) => {
    exited = new Error(`the lease worker exited (${code ?? signal}) before the awaited event`);
    for (const w of waiting.splice(0)) w.reject(exited);
  });
  const lines = createInterface({ input: child.stdout! });
  lines.on('line', (line) => {
    const event = JSON.parse(line) as WorkerEvent;
    const waiter = waiting.findIndex((w) => w.kind === event.event);
    if (waiter >= 0) waiting.splice(waiter, 1)[0]!.resolve(event);
    else events.push(event);
  });
  const next = (kind: WorkerEvent['event']) =>
    new Promise<WorkerEvent>((resolve, reject) => {
      const queued = events.findIndex((e) => e.event === kind);
      if (queued >= 0) resolve(events.splice(queued, 1)[0]!);
      else if (exited) reject(exited);
      else waiting.push({ kind, resolve, reject });
    });
  const drop = () => events.splice(0);
  return { child, next, drop };
}

describe('fencing a worker stopped past its lease (SIGSTOP)', () => {
  it("its late journal write is refused with E_LEASE_LOST and the new holder's journal is kept", async () => {
    const url = await server.createDatabase();
    const store = await PostgresStateStore.open({ connectionString: url });
    const worker = startWorker(url, 'stopped', 1000);
    try {
      const leased = await worker.next('leased');
      await worker.next('wrote');
      worker.child.kill('SIGSTOP');
      worker.drop();
      // Wait for the event: the stopped worker's lease expires, and this client takes it.
      let lease = await store.leaseReplica('stopped', { ttlMs: 60_000 }).catch(() => undefined);
      while (!lease) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        lease = await store.leaseReplica('stopped', { ttlMs: 60_000 }).catch(() => undefined);
      }
      expect(lease.epoch).toBeGreaterThan(leased.epoch!);
      const mine = {
        ...journalOf('stopped-run', 'stopped', 'commit'),
        updatedAt: 'new holder',
      };
      await store.saveRun(mine, { fence: { replica: 'stopped', epoch: lease.epoch } });
      worker.child.kill('SIGCONT');
      let refused = await worker.next('refused');
      if (refused.what === 'heartbeat') {
        expect(refused.code).toBe('E_LEASE_LOST');
        refused = await worker.next('refused');
      }
      console.log(
        `stopped worker (epoch ${leased.epoch}) refused after resuming: ${JSON.stringify(refused)}; new epoch ${lease.epoch}`,
      );
      expect({ what: refused.what, code: refused.code }).toEqual({ what: 'write', code: 'E_LEASE_LOST' });
      const kept = await store.loadRun('stopped-run');
      expect({ state: kept?.state, updatedAt: kept?.updatedAt }).toEqual({ state: 'commit', updatedAt: 'new holder' });
      await once(worker.child, 'exit');
    } finally {
      if (worker.child.exitCode === null) worker.child.kill('SIGKILL');
      await store.close();
    }
  });
});
