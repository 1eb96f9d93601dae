import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseJob, type RunRecord } from '@replikit/core';
import { testPattern } from '@replikit/core/testing';
import { createFileVM, openGuestDisk } from '@replikit/driver-file';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openRunQueue } from '../src/cluster/run-queue.js';
import { PostgresStateStore, QueueEngine, type RunLimits } from '../src/index.js';
import { startTestPostgres, type TestPostgres } from '../src/testing/index.js';

const MiB = 1024 * 1024;

let server: TestPostgres;
const folders: string[] = [];
const children: ChildProcess[] = [];
beforeAll(async () => {
  server = await startTestPostgres();
});
afterAll(async () => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  await server?.stop();
  for (const dir of folders) await rm(dir, { recursive: true, force: true });
});

interface WorkerEvent {
  worker: string;
  event: string;
  job?: string;
  runId?: string;
  code?: string;
}

/** A worker child process under `limits`; resolves once it is ready. */
async function startWorker(url: string, name: string, limits: RunLimits | null) {
  const child = spawn(
    process.execPath,
    [
      '--conditions=@replikit/source',
      '--import',
      'tsx',
      fileURLToPath(new URL('./helpers/limits-worker-child.ts', import.meta.url)),
      url,
      name,
      JSON.stringify(limits),
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  children.push(child);
  const events: WorkerEvent[] = [];
  const listeners = new Set<(event: WorkerEvent) => void>();
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const ready = new Promise<void>((resolve, reject) => {
    child.once('exit', (code, signal) => reject(new Error(`worker ${name} exited (${code ?? signal}):\n${stderr}`)));
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const event = JSON.parse(line) as WorkerEvent;
      events.push(event);
      if (event.event === 'ready') resolve();
      for (const listener of [...listeners]) listener(event);
    });
  });
  await ready;
  return { child, name, events, listeners };
}

type Worker = Awaited<ReturnType<typeof startWorker>>;

/** The most intervals that overlap at one moment (an end and a start at the same instant do not overlap). */
function maxOverlap(intervals: ReadonlyArray<readonly [number, number]>): number {
  const edges = intervals.flatMap(([start, end]) => [
    [start, 1],
    [end, -1],
  ]);
  edges.sort((a, b) => a[0]! - b[0]! || a[1]! - b[1]!);
  let now = 0;
  let most = 0;
  for (const [, step] of edges) {
    now += step!;
    most = Math.max(most, now);
  }
  return most;
}

/**
 * Three worker processes carry out one run of each of `count` jobs that all write to one target
 * (and read from one source folder), under `limits`; returns the runs' records and journals.
 */
async function runBurst(
  limits: RunLimits | null,
  count: number,
  options: {
    expireInSeconds?: number;
    /** Called while the runs go on (after the requests were sent). */
    during?: (workers: Worker[], store: PostgresStateStore) => Promise<void>;
  } = {},
) {
  const url = await server.createDatabase();
  const dir = await mkdtemp(join(tmpdir(), 'replikit-limits-'));
  folders.push(dir);
  const vms = join(dir, 'vms');
  const size = 4 * MiB;
  const jobs = [];
  for (let i = 0; i < count; i++) {
    const name = `vm${i}`;
    await createFileVM(vms, { name, disks: [{ id: 'system', size }] });
    const guest = await openGuestDisk(vms, name, 'system');
    await guest.write(0, testPattern(i + 1, size));
    await guest.close();
    jobs.push(
      parseJob({
        name,
        source: { driver: 'file', root: vms, vm: name, reflink: false },
        target: { driver: 'file', root: join(dir, 'replicas'), reflink: false },
        method: 'qhybrid',
        // About a second a run, so that runs left alone would overlap.
        options: { bandwidthLimit: 4 * MiB },
      }),
    );
  }
  const store = await PostgresStateStore.open({ connectionString: url });
  const boss = await openRunQueue({
    connectionString: url,
    retryDelaySeconds: 1,
    superviseIntervalSeconds: 1,
    ...(options.expireInSeconds ? { expireInSeconds: options.expireInSeconds } : {}),
  });
  try {
    const workers = await Promise.all(['w1', 'w2', 'w3'].map((name) => startWorker(url, name, limits)));
    const engine = new QueueEngine(store, boss, 50);
    const answers = Promise.all(jobs.map((job) => engine.run(job)));
    await options.during?.(workers, store);
    const records: RunRecord[] = await answers;
    const journals = await store.listRuns();
    for (const worker of workers) if (worker.child.exitCode === null) worker.child.kill('SIGKILL');
    return { records, journals, events: workers.flatMap((worker) => worker.events) };
  } finally {
    await boss.stop({ graceful: false, wait: false }).catch(() => undefined);
    await store.close();
  }
}

describe('run limits across worker processes (advisory-lock slots in PostgreSQL)', () => {
  for (const perTarget of [1, 2]) {
    it(`at most ${perTarget} run(s) at once write to one target over three workers, and every run happens`, async () => {
      const count = 6;
      const { records, journals, events } = await runBurst({ perTarget }, count);
      expect(records.map((record) => record.state)).toEqual(Array(count).fill('completed'));
      // Every run happened once: one journal per job, each completed.
      expect(journals.map((journal) => journal.job.name).sort()).toEqual(records.map((r) => r.job.name).sort());
      expect(journals.every((journal) => journal.state === 'completed')).toBe(true);
      const intervals = journals.map(
        (journal) => [Date.parse(journal.startedAt), Date.parse(journal.finishedAt ?? journal.updatedAt)] as const,
      );
      const overlap = maxOverlap(intervals);
      const waited = events.filter((e) => e.event === 'waiting').length;
      const byWorker = Object.fromEntries(
        ['w1', 'w2', 'w3'].map((w) => [w, events.filter((e) => e.worker === w && e.event === 'request-end').length]),
      );
      const span = Math.max(...intervals.map((i) => i[1])) - Math.min(...intervals.map((i) => i[0]));
      console.log(
        `perTarget ${perTarget}: ${count} runs in ${span} ms, most at once ${overlap}, ${waited} request(s) waited for a slot; requests per worker ${JSON.stringify(byWorker)}`,
      );
      expect(overlap).toBeLessThanOrEqual(perTarget);
      // No request failed or went back to the queue: waiting for a slot burns no retry.
      expect(events.filter((e) => e.event === 'request-end' && e.code !== 'completed')).toEqual([]);
    }, 120_000);
  }

  it('a worker SIGKILLed while it holds the slot: its slot ends with its session, the waiting runs go on, its run is resumed; every run completes', async () => {
    const count = 4;
    let killedAt = 0;
    let victim = '';
    let killedRun = '';
    const { records, journals } = await runBurst({ perTarget: 1 }, count, {
      expireInSeconds: 4,
      during: async (workers) => {
        // Wait for the event: a worker says one of its runs holds the target's slot.
        const worker = await firstHolder(workers);
        victim = worker.name;
        killedRun = worker.events.find((e) => e.event === 'holding')!.runId!;
        worker.child.kill('SIGKILL');
        killedAt = Date.now();
      },
    });
    expect(records.map((record) => record.state)).toEqual(Array(count).fill('completed'));
    expect(journals.map((journal) => journal.job.name).sort()).toEqual(records.map((r) => r.job.name).sort());
    const after = journals.filter((journal) => Date.parse(journal.startedAt) > killedAt);
    const killed = journals.find((journal) => journal.runId === killedRun);
    console.log(
      `killed ${victim} holding the slot in run ${killedRun}; ${after.length} other run(s) started after the kill; every run completed (${records.length})`,
    );
    // The killed run was resumed (one journal, completed, started before the kill), not run again.
    expect(killed?.state).toBe('completed');
    expect(Date.parse(killed!.startedAt)).toBeLessThan(killedAt);
    expect(records.map((record) => record.runId)).toContain(killedRun);
    // Other runs took the freed slot.
    expect(after.length).toBeGreaterThan(0);
  }, 120_000);

  it('a worker SIGSTOPped while it holds the slot keeps it: no other run starts until it wakes, its lease lost; then every run completes', async () => {
    const count = 4;
    let stoppedAt = 0;
    let wokeAt = 0;
    let stoppedRun = '';
    const { records, journals, events } = await runBurst({ perTarget: 1 }, count, {
      expireInSeconds: 60,
      during: async (workers, store) => {
        const worker = await firstHolder(workers);
        const holding = worker.events.find((e) => e.event === 'holding')!;
        stoppedRun = holding.runId!;
        worker.child.kill('SIGSTOP');
        stoppedAt = Date.now();
        try {
          // Wait for the event: the stopped run's replica lease expired (5 s TTL, by the database's clock).
          // (The engine leases the replica under the job's name.)
          await untilLeaseExpired(store, holding.job!);
        } finally {
          wokeAt = Date.now();
          worker.child.kill('SIGCONT');
        }
      },
    });
    expect(records.map((record) => record.state)).toEqual(Array(count).fill('completed'));
    expect(journals.map((journal) => journal.job.name).sort()).toEqual(records.map((r) => r.job.name).sort());
    const startedWhileStopped = journals.filter((journal) => {
      const at = Date.parse(journal.startedAt);
      return at > stoppedAt && at < wokeAt;
    });
    const refused = events.filter((e) => e.event === 'request-end' && e.code === 'E_LEASE_LOST');
    console.log(
      `stopped the holder of run ${stoppedRun} for ${wokeAt - stoppedAt} ms: ${startedWhileStopped.length} run(s) started meanwhile; ${refused.length} E_LEASE_LOST answer(s) after it woke; every run completed (${records.length})`,
    );
    expect(startedWhileStopped).toEqual([]);
    expect(records.map((record) => record.runId)).toContain(stoppedRun);
  }, 120_000);
});

/** Resolves once replica `replica`'s lease has expired, by the database's clock (fails after a minute). */
async function untilLeaseExpired(store: PostgresStateStore, replica: string): Promise<void> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const { rows } = await store.query<{ expired: boolean }>(
      'SELECT expires_at < clock_timestamp() AS expired FROM replikit.replica_leases WHERE replica = $1',
      [replica],
    );
    if (rows[0]?.expired) return;
    if (Date.now() > deadline) throw new Error(`the lease of ${replica} did not expire within a minute`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

/** Resolves with the first worker that says a run of its holds run-limit slots (fails after a minute). */
function firstHolder(workers: Worker[]): Promise<Worker> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no worker held a slot within a minute')), 60_000);
    const found = (worker: Worker) => {
      clearTimeout(timer);
      for (const w of workers) w.listeners.clear();
      resolve(worker);
    };
    for (const worker of workers) {
      if (worker.events.some((e) => e.event === 'holding')) return found(worker);
      worker.listeners.add((event) => {
        if (event.event === 'holding') found(worker);
      });
    }
  });
}
