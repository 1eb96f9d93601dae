// `replikit daemon --store … --max-per-host N --max-per-target N`: the flags are checked, refused
// without --store (the embedded daemon has no run limits), and given to the cluster worker, which
// says so and runs the jobs under them. That the limits hold across worker processes is tested in
// packages/store-postgres/test/run-limits.test.ts.
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
let server: TestPostgres | undefined;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'replikit-daemon-limits-'));
  await mkdir(join(dir, 'jobs'), { recursive: true });
  for (const name of ['alpha', 'beta']) {
    await createRandomVm(join(dir, 'vms'), name, [{ id: 'disk0', size: MiB }], 0.5);
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
  await server?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('replikit daemon --max-per-host / --max-per-target', () => {
  it('refuses a limit that is not a whole number ≥ 1, and a limit without --store (exit 2)', async () => {
    for (const value of ['0', '-1', '1.5', 'two', '']) {
      const result = await runCli(
        ['daemon', 'jobs', '--store', 'postgres://nobody@127.0.0.1:1/x', `--max-per-target=${value}`],
        {
          cwd: dir,
        },
      );
      expect(result.code, result.stderr).toBe(2);
      expect(result.stderr).toMatch(/--max-per-target takes a whole number of runs at once/);
    }
    const embedded = await runCli(['daemon', 'jobs', '--max-per-host', '2'], { cwd: dir });
    expect(embedded.code).toBe(2);
    expect(embedded.stderr).toMatch(/need --store/);
  });

  it('a worker started with limits says so and runs the jobs under them', async () => {
    server = await startTestPostgres();
    const url = await server.createDatabase();
    const child = spawnCli(['daemon', 'jobs', '--store', url, '--max-per-host', '1', '--max-per-target', '1'], {
      cwd: dir,
      env: { REPLIKIT_STATE_DIR: join(dir, '.replikit') },
    });
    const exit = waitForExit(child);
    let seen = '';
    await new Promise<void>((resolve, reject) => {
      const check = () => {
        if (/alpha: run \S+ completed/.test(seen) && /beta: run \S+ completed/.test(seen)) resolve();
      };
      child.stderr!.on('data', (chunk: Buffer) => {
        seen += chunk.toString();
        check();
      });
      child.once('exit', () => reject(new Error(`the worker exited:\n${seen}`)));
    });
    expect(seen).toMatch(/run limits across the workers: at most 1 per source host, 1 per target at once/);
    child.kill('SIGTERM');
    expect((await exit).code).toBe(0);
  }, 120_000);
});
