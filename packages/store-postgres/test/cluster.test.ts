import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseJob, type RunRecord } from '@replikit/core';
import { testPattern } from '@replikit/core/testing';
import { createFileVM, openGuestDisk } from '@replikit/driver-file';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openRunQueue } from '../src/cluster/run-queue.js';
import { listWorkers, PostgresStateStore, QueueEngine } from '../src/index.js';
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
  runId?: string;
  job?: string;
  to?: string;
  bytesSent?: number;
  outcome?: string;
  reason?: string;
}

/**
 * How long a wait for a worker's event may last before the test fails saying what did not happen
 * (with every worker's events and stderr); below the test's own timeout, so that message is seen.
 */
const WAIT_LIMIT_MS = 90_000;

type Worker = ReturnType<typeof startWorker>;

/** A worker child process: its events (stdout lines) and stderr, kept. */
function startWorker(url: string, jobsFile: string, name: string, ttlMs: number, expireSeconds: number) {
  const child = spawn(
    process.execPath,
    [
      '--conditions=@replikit/source',
      '--import',
      'tsx',
      fileURLToPath(new URL('./helpers/cluster-worker-child.ts', import.meta.url)),
      url,
      jobsFile,
      name,
      String(ttlMs),
      String(expireSeconds),
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  children.push(child);
  const events: WorkerEvent[] = [];
  const listeners = new Set<() => void>();
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
    if (process.env.REPLIKIT_TEST_ECHO) process.stderr.write(chunk);
  });
  createInterface({ input: child.stdout! }).on('line', (line) => {
    if (process.env.REPLIKIT_TEST_ECHO) process.stderr.write(`${line}\n`);
    events.push(JSON.parse(line) as WorkerEvent);
    for (const listener of [...listeners]) listener();
  });
  child.once('exit', () => {
    for (const listener of [...listeners]) listener();
  });
  const worker = {
    child,
    name,
    events,
    listeners,
    stderr: () => stderr,
    /** Resolves with the worker's first event (seen before or after the call) that passes `test`. */
    until: (test: (e: WorkerEvent) => boolean, what: string): Promise<WorkerEvent> =>
      untilCluster([worker], (all) => all.find(test), what) as Promise<WorkerEvent>,
  };
  return worker;
}

/**
 * Resolves with `check`'s first defined answer over the events of all `workers` (checked now and
 * after each new event). Fails, naming `what` and showing every worker's events and stderr, when
 * every worker exited first or after {@link WAIT_LIMIT_MS}: a test never waits forever.
 */
function untilCluster<T>(workers: Worker[], check: (all: WorkerEvent[]) => T | undefined, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const finish = (error?: Error, value?: T) => {
      clearTimeout(timer);
      for (const worker of workers) worker.listeners.delete(listener);
      if (error) reject(error);
      else resolve(value as T);
    };
    const fail = (why: string) =>
      finish(
        new Error(
          `${why} before ${what}\n${workers
            .map(
              (w) =>
                `--- ${w.name} events:\n${w.events.map((e) => JSON.stringify(e)).join('\n')}\n--- ${w.name} stderr:\n${w.stderr()}`,
            )
            .join('\n')}`,
        ),
      );
    const listener = () => {
      const found = check(workers.flatMap((worker) => worker.events));
      if (found !== undefined) return finish(undefined, found);
      if (workers.every((w) => w.child.exitCode !== null || w.child.signalCode !== null)) fail('every worker exited');
    };
    const timer = setTimeout(() => fail(`${WAIT_LIMIT_MS / 1000} s passed`), WAIT_LIMIT_MS);
    for (const worker of workers) worker.listeners.add(listener);
    listener();
  });
}

async function world(jobs: unknown[]) {
  const dir = await mkdtemp(join(tmpdir(), 'replikit-cluster-'));
  folders.push(dir);
  const jobsFile = join(dir, 'jobs.json');
  await writeFile(jobsFile, JSON.stringify(jobs));
  return { dir, jobsFile, vms: join(dir, 'vms'), replicas: join(dir, 'replicas') };
}

describe('a cluster of worker daemons on PostgreSQL (pg-boss queue)', () => {
  it('a run whose worker is killed mid-run is resumed by the other worker from its journal', async () => {
    const url = await server.createDatabase();
    const w = await world([]);
    const size = 24 * MiB;
    await createFileVM(w.vms, { name: 'big', disks: [{ id: 'system', size }] });
    const guest = await openGuestDisk(w.vms, 'big', 'system');
    for (let at = 0; at < size; at += 4 * MiB) await guest.write(at, testPattern(at / MiB + 1, 4 * MiB));
    await guest.close();
    const job = parseJob({
      name: 'big',
      source: { driver: 'file', root: w.vms, vm: 'big', reflink: false },
      target: { driver: 'file', root: w.replicas, reflink: false },
      method: 'qhybrid',
      options: { bandwidthLimit: 3 * MiB },
    });
    const store = await PostgresStateStore.open({ connectionString: url });
    const boss = await openRunQueue({
      connectionString: url,
      expireInSeconds: 3,
      retryDelaySeconds: 1,
      superviseIntervalSeconds: 1,
    });
    const workers = [startWorker(url, w.jobsFile, 'w1', 2000, 3), startWorker(url, w.jobsFile, 'w2', 2000, 3)];
    try {
      for (const worker of workers) await worker.until((e) => e.event === 'ready', `${worker.name} is ready`);
      const answer = new QueueEngine(store, boss).run(job).then(
        (record) => record,
        (error: unknown) => error,
      );
      // Wait for the event: some worker has sent a third of the disk (checkpoints every second).
      const first = await untilCluster(
        workers,
        (all) => all.find((e) => e.event === 'progress' && (e.bytesSent ?? 0) > size / 3),
        'a worker sent a third of the disk',
      );
      const victim = workers.find((worker) => worker.name === first.worker)!;
      const other = workers.find((worker) => worker !== victim)!;
      victim.child.kill('SIGKILL');
      await once(victim.child, 'exit');
      const record = (await answer) as RunRecord;
      expect(record.state).toBe('completed');
      expect(record.runId).toBe(first.runId);
      // The other worker resumed the run: its first progress is past zero, and it sent less than the disk.
      const resumed = other.events.filter((e) => e.event === 'progress' && e.runId === record.runId);
      expect(resumed.length).toBeGreaterThan(0);
      const fromBytes = resumed[0]!.bytesSent!;
      const sentOnResume = record.stats.bytesSent - fromBytes;
      console.log(
        `killed ${victim.name} at ${first.bytesSent} bytes sent; ${other.name} resumed run ${record.runId} from ${fromBytes} bytes and sent ${sentOnResume} of ${size} (total ${record.stats.bytesSent})`,
      );
      expect(fromBytes).toBeGreaterThan(0);
      expect(sentOnResume).toBeLessThan(size);
      const journal = await store.loadRun(record.runId);
      expect(journal?.state).toBe('completed');
      // One run of the job, and one restore point.
      expect((await store.listRuns()).map((r) => r.runId)).toEqual([record.runId]);
      const rows = await listWorkers(store);
      expect(rows.map((r) => r.worker).sort()).toEqual(['w1', 'w2']);
    } finally {
      for (const worker of workers) if (worker.child.exitCode === null) worker.child.kill('SIGKILL');
      await boss.stop({ graceful: false, wait: false }).catch(() => undefined);
      await store.close();
    }
  }, 120_000);

  it('scheduled jobs run once per slot over two workers; SIGTERM drains a worker', async () => {
    const url = await server.createDatabase();
    const names = ['j1', 'j2', 'j3', 'j4'];
    const w0 = await world([]);
    const jobs = names.map((name) => ({
      name,
      source: { driver: 'file', root: w0.vms, vm: name, reflink: false },
      target: { driver: 'file', root: w0.replicas, reflink: false },
      method: 'qhybrid',
      options: { schedule: '*/2 * * * * *' },
    }));
    const w = await world(jobs);
    for (const name of names) await createFileVM(w0.vms, { name, disks: [{ id: 'system', size: MiB }] });
    const store = await PostgresStateStore.open({ connectionString: url });
    const workers = [startWorker(url, w.jobsFile, 'w1', 3000, 60), startWorker(url, w.jobsFile, 'w2', 3000, 60)];
    try {
      for (const worker of workers) await worker.until((e) => e.event === 'ready', `${worker.name} is ready`);
      // Wait for the event: every job has completed three scheduled runs. The scheduler's daemon
      // reports them; the scheduler lease may move from one worker to the other meanwhile (a
      // heartbeat late on a loaded machine), so the reports of both workers count.
      await untilCluster(
        workers,
        (all) => {
          const done = (name: string) =>
            new Set(
              all
                .filter((e) => e.event === 'run-end' && e.job === name && e.outcome === 'completed')
                .map((e) => e.runId),
            ).size;
          return names.every((name) => done(name) >= 3) ? true : undefined;
        },
        'every job completed three scheduled runs',
      );
      for (const worker of workers) worker.child.kill('SIGTERM');
      for (const worker of workers) await worker.until((e) => e.event === 'drained', `${worker.name} drained`);
      const moves = workers.flatMap((worker) => worker.events.filter((e) => e.event === 'scheduler-lost'));
      if (moves.length > 0) console.log(`scheduler changes: ${moves.map((e) => JSON.stringify(e)).join('; ')}`);
      const runs = await store.listRuns();
      const byWorker = new Map<string, number>();
      for (const worker of workers) {
        byWorker.set(
          worker.name,
          new Set(worker.events.filter((e) => e.event === 'state' && e.to === 'cleanup').map((e) => e.runId)).size,
        );
      }
      console.log(
        `runs: ${runs.length} (${runs.filter((r) => r.state === 'completed').length} completed); per worker ${JSON.stringify(Object.fromEntries(byWorker))}`,
      );
      for (const name of names) {
        const own = runs
          .filter((r) => r.job.name === name)
          .map((r) => [Date.parse(r.startedAt), Date.parse(r.finishedAt ?? r.updatedAt)] as const)
          .sort((a, b) => a[0] - b[0]);
        expect(own.length).toBeGreaterThanOrEqual(3);
        // One run of a job at a time: no two overlap.
        for (let i = 1; i < own.length; i++) expect(own[i]![0]).toBeGreaterThanOrEqual(own[i - 1]![1]);
      }
      // Each run in the journal was started by one request to run the job, and no such request
      // started two runs (a redelivery resumes its run).
      const { rows: starts } = await store.query<{ run_id: string; n: string }>(
        `SELECT run_id, count(*) AS n FROM replikit.run_requests WHERE kind = 'run' AND run_id IS NOT NULL GROUP BY run_id`,
        [],
      );
      expect(starts.filter((r) => Number(r.n) !== 1)).toEqual([]);
      expect(new Set(starts.map((r) => r.run_id))).toEqual(new Set(runs.map((r) => r.runId)));
      expect(runs.every((r) => r.state === 'completed' || r.stopped !== undefined)).toBe(true);
      expect([...byWorker.values()].every((n) => n > 0)).toBe(true);
      const seen = await listWorkers(store);
      expect(seen.every((r) => r.stoppedAt !== undefined)).toBe(true);
    } finally {
      for (const worker of workers) if (worker.child.exitCode === null) worker.child.kill('SIGKILL');
      await store.close();
    }
  }, 120_000);
});
