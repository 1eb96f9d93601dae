// `npm run bench -- scale` (issue 21): runs per minute of a cluster of 1, 2 and 3 worker processes
// on one PostgreSQL store (started by the benchmark: initdb into a temporary folder, as the tests
// do), and the time the store's queries take per run. Each round: a fresh database, `--jobs`
// file-driver jobs (disks of 1 to 4 MiB, random data, each job scheduled every second, so each
// job runs back to back: one run of a job at a time, as the daemon's overlap policy wants), N
// worker processes (`scale-worker.ts`: a `ClusterWorker` each, one of them schedules). After every
// job's first (full) run completed, the runs completed in a window of `--window` seconds are
// counted from the journals. The disks do not change between runs, so the runs after the first
// send little: this measures the per-run overhead, where the store weighs most.
// Store time: each worker times every query of its `pg` clients (pg-timing.ts), per connection
// kind: `replikit` (the state store: journal, leases, job locks, schedules, heartbeats),
// `replikit-queue` (pg-boss: sends, fetches, the scheduler's polling for answers). Shown per
// completed run, and the state store's share of a run's mean wall time.
// The workers, the PostgreSQL server and this process share the machine's cores (2 here): read
// the runs per minute as what this machine gives, not as how the cluster scales on real hosts.
// Flags: --window=30 (or REPLIKIT_BENCH_SCALE_WINDOW) --jobs=20 --workers=1,2,3 --concurrency=1
import { type ChildProcess, spawn } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { createFileVM, openGuestDisk } from '@replikit/driver-file';
import { PostgresStateStore } from '@replikit/store-postgres';
import { startTestPostgres, type TestPostgres } from '@replikit/store-postgres/testing';
import type { PgTimes } from './pg-timing.js';

const MiB = 1024 * 1024;
const here = dirname(fileURLToPath(import.meta.url));

function flag(flags: string[], name: string, fallback: string): string {
  return flags.find((f) => f.startsWith(`--${name}=`))?.split('=')[1] ?? fallback;
}

interface Tick {
  worker: string;
  event: string;
  at?: number;
  done?: number;
  failed?: number;
  pg?: PgTimes;
}

/** A worker process and its latest `tick`. */
function startWorker(url: string, jobsFile: string, name: string, concurrency: number) {
  const child = spawn(
    process.execPath,
    [
      '--conditions=@replikit/source',
      '--import',
      'tsx',
      join(here, 'scale-worker.ts'),
      url,
      jobsFile,
      name,
      String(concurrency),
    ],
    { stdio: ['ignore', 'pipe', 'pipe'], cwd: join(here, '..') },
  );
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const state: { child: ChildProcess; last?: Tick; drained: boolean; stderr: () => string } = {
    child,
    drained: false,
    stderr: () => stderr,
  };
  const ready = new Promise<void>((resolve, reject) => {
    child.once('exit', (code, signal) => reject(new Error(`worker ${name} exited (${code ?? signal}):\n${stderr}`)));
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const event = JSON.parse(line) as Tick;
      if (event.event === 'ready') resolve();
      if (event.event === 'tick') state.last = event;
      if (event.event === 'drained') state.drained = true;
    });
  });
  return {
    ...state,
    ready,
    get last() {
      return state.last;
    },
    get drained() {
      return state.drained;
    },
  };
}

/** Sums the workers' query times per connection kind. */
function sumTimes(ticks: ReadonlyArray<Tick | undefined>): PgTimes {
  const sum: PgTimes = {};
  for (const tick of ticks) {
    for (const [kind, value] of Object.entries(tick?.pg ?? {})) {
      const entry = sum[kind] ?? { ms: 0, queries: 0 };
      sum[kind] = entry;
      entry.ms += value.ms;
      entry.queries += value.queries;
    }
  }
  return sum;
}

interface Round {
  workers: number;
  runs: number;
  perMinute: number;
  meanRunMs: number;
  failed: number;
  pg: PgTimes;
}

async function round(
  server: TestPostgres,
  workers: number,
  jobCount: number,
  windowS: number,
  concurrency: number,
): Promise<Round> {
  const url = await server.createDatabase();
  const dir = await mkdtemp(join(tmpdir(), 'replikit-bench-scale-'));
  const vms = join(dir, 'vms');
  const jobs = [];
  const data = Buffer.alloc(MiB);
  for (let i = 0; i < jobCount; i++) {
    const name = `vm${i}`;
    const size = (1 + (i % 4)) * MiB;
    await createFileVM(vms, { name, disks: [{ id: 'system', size }] });
    const guest = await openGuestDisk(vms, name, 'system');
    for (let at = 0; at < size; at += MiB) await guest.write(at, randomFillSync(data));
    await guest.close();
    jobs.push({
      name,
      source: { driver: 'file', root: vms, vm: name, reflink: false },
      target: { driver: 'file', root: join(dir, 'replicas'), reflink: false },
      method: 'qhybrid',
      options: { schedule: { every: '1s' } },
    });
  }
  const jobsFile = join(dir, 'jobs.json');
  await writeFile(jobsFile, JSON.stringify(jobs));
  const store = await PostgresStateStore.open({ connectionString: url });
  const started = Array.from({ length: workers }, (_, i) => startWorker(url, jobsFile, `w${i + 1}`, concurrency));
  try {
    await Promise.all(started.map((w) => w.ready));
    // Warm-up: every job's first (full) run completed, and one tick more of every worker.
    for (;;) {
      const { rows } = await store.query<{ n: string }>(
        `SELECT count(DISTINCT job) AS n FROM replikit.runs WHERE state = 'completed'`,
        [],
      );
      if (Number(rows[0]?.n) >= jobCount) break;
      await sleep(250);
    }
    await sleep(1000);
    const before = started.map((w) => w.last);
    const from = Date.now();
    await sleep(windowS * 1000);
    const to = Date.now();
    const after = started.map((w) => w.last);
    const runs = (await store.listRuns()).filter((r) => {
      const end = Date.parse(r.finishedAt ?? '');
      return r.state === 'completed' && end >= from && end < to;
    });
    const meanRunMs =
      runs.reduce((sum, r) => sum + (Date.parse(r.finishedAt!) - Date.parse(r.startedAt)), 0) /
      Math.max(1, runs.length);
    const pgBefore = sumTimes(before);
    const pg: PgTimes = {};
    for (const [kind, value] of Object.entries(sumTimes(after))) {
      pg[kind] = { ms: value.ms - (pgBefore[kind]?.ms ?? 0), queries: value.queries - (pgBefore[kind]?.queries ?? 0) };
    }
    const failed = after.reduce((n, t) => n + (t?.failed ?? 0), 0) - before.reduce((n, t) => n + (t?.failed ?? 0), 0);
    return { workers, runs: runs.length, perMinute: (runs.length * 60_000) / (to - from), meanRunMs, failed, pg };
  } finally {
    for (const w of started) w.child.kill('SIGTERM');
    const deadline = Date.now() + 20_000;
    while (started.some((w) => !w.drained && w.child.exitCode === null) && Date.now() < deadline) await sleep(100);
    for (const w of started) if (w.child.exitCode === null) w.child.kill('SIGKILL');
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
}

export async function run(flags: string[]): Promise<void> {
  const windowS = Number(flag(flags, 'window', process.env.REPLIKIT_BENCH_SCALE_WINDOW ?? '30'));
  const jobCount = Number(flag(flags, 'jobs', '20'));
  const counts = flag(flags, 'workers', '1,2,3').split(',').map(Number);
  const concurrency = Number(flag(flags, 'concurrency', '1'));
  console.log(
    `${jobCount} file-driver jobs (1–4 MiB disks, every 1 s), ${concurrency} run(s) at once per worker, window ${windowS} s per round; ` +
      `${cpus().length} cores shared by the workers, PostgreSQL and this process (load average ${loadavg()[0]!.toFixed(2)} at start)`,
  );
  const server = await startTestPostgres();
  try {
    const rounds: Round[] = [];
    for (const workers of counts) {
      const result = await round(server, workers, jobCount, windowS, concurrency);
      rounds.push(result);
      const store = result.pg.replikit ?? { ms: 0, queries: 0 };
      const queue = result.pg['replikit-queue'] ?? { ms: 0, queries: 0 };
      const per = (ms: number) => (result.runs > 0 ? ms / result.runs : Number.NaN);
      console.log(
        `${workers} worker(s): ${result.runs} runs in ${windowS} s = ${result.perMinute.toFixed(1)} runs/min` +
          `${result.failed > 0 ? ` (${result.failed} failed)` : ''}; mean run ${result.meanRunMs.toFixed(0)} ms; ` +
          `state store ${per(store.ms).toFixed(1)} ms/run in ${(store.queries / Math.max(1, result.runs)).toFixed(1)} queries ` +
          `(${((100 * per(store.ms)) / result.meanRunMs).toFixed(1)} % of a run's wall time); ` +
          `queue (pg-boss) ${per(queue.ms).toFixed(1)} ms/run in ${(queue.queries / Math.max(1, result.runs)).toFixed(1)} queries` +
          `; load average ${loadavg()[0]!.toFixed(2)}`,
      );
    }
    const first = rounds[0]?.perMinute ?? 0;
    console.log(
      `runs/min relative to ${rounds[0]?.workers} worker(s): ${rounds.map((r) => `${r.workers}: ×${(r.perMinute / first).toFixed(2)}`).join(', ')}`,
    );
  } finally {
    await server.stop();
  }
}
