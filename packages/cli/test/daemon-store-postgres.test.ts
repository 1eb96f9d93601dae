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

/** Keeps the child's stderr; `when(pattern)` resolves with the first match, seen before or after the call. */
function watch(child: ReturnType<typeof spawnCli>) {
  let seen = '';
  const waiting: Array<{ pattern: RegExp; resolve: (m: RegExpMatchArray) => void }> = [];
  child.stderr!.on('data', (chunk: Buffer) => {
    seen += chunk.toString();
    if (process.env.REPLIKIT_TEST_ECHO) process.stderr.write(chunk);
    for (const w of waiting.splice(0)) {
      const match = seen.match(w.pattern);
      if (match) w.resolve(match);
      else waiting.push(w);
    }
  });
  const when = (pattern: RegExp) =>
    new Promise<RegExpMatchArray>((resolve, reject) => {
      const match = seen.match(pattern);
      if (match) return resolve(match);
      waiting.push({ pattern, resolve });
      child.once('close', () => reject(new Error(`the process exited before printing ${pattern}:\n${seen}`)));
    });
  return { child, when };
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
    const scheduler = await Promise.race(watched.map((w) => w.when(/schedules the jobs now/).then(() => w)));
    await scheduler.when(/alpha: run \S+ completed/);
    await scheduler.when(/beta: run \S+ completed/);
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
    for (const exit of exits) expect((await exit).code).toBe(0);
    const after = JSON.parse((await runCli(['workers', '--store', url, '--json'], { cwd: dir })).stdout) as Array<{
      stoppedAt?: string;
    }>;
    expect(after.every((r) => r.stoppedAt !== undefined)).toBe(true);
  }, 120_000);
});
