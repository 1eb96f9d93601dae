// `replikit daemon --store postgres://…`: two worker processes share one PostgreSQL store; the
// jobs run on their schedule, `replikit workers` and `replikit status --store` read the shared
// store, SIGTERM drains each worker. The test waits for the processes' lines.
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTestPostgres, type TestPostgres } from '@replikit/store-postgres/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { runCli, spawnCli, waitForExit } from './helpers/cli-harness.js';
import { createRandomVm } from './helpers/file-vm.js';

const MiB = 1024 * 1024;
let dir: string;
let server: TestPostgres;
/** Every worker started, killed at the end if a failed test left it running. */
const started: Array<ReturnType<typeof spawnCli>> = [];

beforeAll(async () => {
  server = await startTestPostgres();
  dir = await mkdtemp(join(tmpdir(), 'replikit-daemon-pg-'));
  await mkdir(join(dir, 'jobs'), { recursive: true });
  for (const name of ['alpha', 'beta']) {
    await createRandomVm(join(dir, 'vms'), name, [{ id: 'disk0', size: 2 * MiB }], 0.5);
    const job = {
      name,
      source: { driver: 'file', root: '../vms', vm: name },
      target: { driver: 'file', root: '../replicas' },
      method: 'qhybrid',
      options: { schedule: '*/2 * * * * *' },
    };
    await writeFile(join(dir, 'jobs', `${name}.yaml`), stringify(job));
  }
});
afterAll(async () => {
  for (const child of started) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  await server?.stop();
  await rm(dir, { recursive: true, force: true });
});

/**
 * How long a wait for a worker's line may last before the test fails saying what was not printed
 * (with the workers' stderr); below the test's own timeout, so that message is seen.
 */
const WAIT_LIMIT_MS = 90_000;

type Watched = ReturnType<typeof watch>;

/** Keeps the child's stderr; `when(pattern)` resolves with the first match, seen before or after the call. */
function watch(child: ReturnType<typeof spawnCli>) {
  let seen = '';
  const listeners = new Set<() => void>();
  child.stderr!.on('data', (chunk: Buffer) => {
    seen += chunk.toString();
    if (process.env.REPLIKIT_TEST_ECHO) process.stderr.write(chunk);
    for (const listener of [...listeners]) listener();
  });
  child.once('close', () => {
    for (const listener of [...listeners]) listener();
  });
  const watched = {
    child,
    listeners,
    seen: () => seen,
    when: (pattern: RegExp): Promise<RegExpMatchArray> => whenAny([watched], pattern),
  };
  return watched;
}

/**
 * Resolves with the first match of `pattern` in the stderr of any of `workers` (seen before or
 * after the call). Fails with the workers' stderr when every one exited first or after
 * {@link WAIT_LIMIT_MS}: a test never waits forever.
 */
function whenAny(workers: Watched[], pattern: RegExp): Promise<RegExpMatchArray> {
  return new Promise((resolve, reject) => {
    const finish = (error?: Error, match?: RegExpMatchArray) => {
      clearTimeout(timer);
      for (const w of workers) w.listeners.delete(listener);
      if (error) reject(error);
      else resolve(match!);
    };
    const fail = (why: string) =>
      finish(
        new Error(
          `${why} before a worker printed ${pattern}:\n${workers.map((w, i) => `--- worker ${i}:\n${w.seen()}`).join('\n')}`,
        ),
      );
    const listener = () => {
      for (const w of workers) {
        const match = w.seen().match(pattern);
        if (match) return finish(undefined, match);
      }
      if (workers.every((w) => w.child.exitCode !== null || w.child.signalCode !== null)) fail('every worker exited');
    };
    const timer = setTimeout(() => fail(`${WAIT_LIMIT_MS / 1000} s passed`), WAIT_LIMIT_MS);
    for (const w of workers) w.listeners.add(listener);
    listener();
  });
}

describe('replikit daemon --store postgres://', () => {
  it('two workers share the jobs; workers and status read the store; SIGTERM drains', async () => {
    const url = await server.createDatabase();
    const workers = [0, 1].map(() =>
      spawnCli(['daemon', 'jobs', '--store', url], { cwd: dir, env: { REPLIKIT_STATE_DIR: join(dir, '.replikit') } }),
    );
    started.push(...workers);
    const watched = workers.map(watch);
    const exits = workers.map((child) => waitForExit(child));
    for (const w of watched) await w.when(/worker \S+ started on/);
    // The scheduler's daemon prints the runs' ends; the scheduler lease may move from one worker
    // to the other meanwhile (a heartbeat late on a loaded machine), so either worker's line counts.
    await whenAny(watched, /alpha: run \S+ completed/);
    await whenAny(watched, /beta: run \S+ completed/);
    const listed = await runCli(['workers', '--store', url, '--json'], { cwd: dir });
    expect(listed.code, listed.stderr).toBe(0);
    const rows = JSON.parse(listed.stdout) as Array<{ worker: string; scheduler: boolean; runsDone: number }>;
    expect(rows).toHaveLength(2);
    expect(rows.filter((r) => r.scheduler)).toHaveLength(1);
    const table = await runCli(['workers', '--store', url], { cwd: dir });
    const status = await runCli(['status', '--store', url], { cwd: dir });
    console.log(`${table.stdout}\n${status.stdout}`);
    expect(status.code, status.stderr).toBe(0);
    expect(status.stdout).toMatch(/alpha/);
    expect(status.stdout).toMatch(/beta/);
    for (const child of workers) child.kill('SIGTERM');
    await Promise.all(watched.map((w) => w.when(/worker stopped/)));
    for (const exit of exits) expect((await exit).code).toBe(0);
    const after = JSON.parse((await runCli(['workers', '--store', url, '--json'], { cwd: dir })).stdout) as Array<{
      stoppedAt?: string;
    }>;
    expect(after.every((r) => r.stoppedAt !== undefined)).toBe(true);
  }, 120_000);
});
