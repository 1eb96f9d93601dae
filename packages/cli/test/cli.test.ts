import { mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createFileVM } from '@replikit/driver-file';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { runCli } from './helpers/cli-harness.js';

let dir: string;
const MiB = 1024 * 1024;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'replikit-cli-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function jobFile(job: unknown, name = 'job.yaml'): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, typeof job === 'string' ? job : stringify(job));
  return path;
}

function fileJob(extra: Record<string, unknown> = {}) {
  return {
    name: 'cli',
    source: { driver: 'file', root: './vms', vm: 'web' },
    target: { driver: 'file', root: './replicas' },
    method: 'qhybrid',
    ...extra,
  };
}

function noStack(text: string) {
  expect(text).not.toMatch(/\n\s+at /);
}

describe('replikit validate', () => {
  it('lists every broken rule with its id and fix, and exits 2', async () => {
    const path = await jobFile({
      name: 'x2h',
      source: { driver: 'xen', vm: 'db', pool: 'p1', url: 'https://xen1.example', passwordEnv: 'XEN_PASSWORD' },
      target: { driver: 'hyperv', replicaPath: 'D:\\Replicas' },
      method: 'abd',
      options: { direction: 'pull', singlePass: false },
    });
    const { code, stdout, stderr } = await runCli(['validate', path], { cwd: dir });
    expect(code).toBe(2);
    expect(stderr).toBe('');
    for (const id of ['xen-to-hyperv-needs-qhybrid', 'xva-abd-xen-only', 'method-supported']) {
      expect(stdout).toContain(id);
    }
    expect(stdout).toContain('breaks 3 rules');
    expect(stdout.match(/fix: /g)?.length).toBeGreaterThanOrEqual(3);
  });

  it('exits 0 for a valid job', async () => {
    const { code, stdout } = await runCli(['validate', await jobFile(fileJob())], { cwd: dir });
    expect(stdout).toContain("job 'cli' is valid");
    expect(code).toBe(0);
  });

  it('names the field of a wrong type in one line, exit 2, no stack', async () => {
    const path = await jobFile(fileJob({ options: { retention: 'three' } }));
    const { code, stderr } = await runCli(['validate', path], { cwd: dir });
    expect(code).toBe(2);
    expect(stderr.trim().split('\n')).toHaveLength(1);
    expect(stderr).toContain('options.retention');
    expect(stderr).toContain('E_JOB');
    noStack(stderr);
  });

  it('refuses a path-like VM name for the file driver, naming the field, offline', async () => {
    for (const vm of ['../../etc', '/etc', 'a/b', 'a\\b', '..', '.hidden', 'a\u0000b']) {
      const path = await jobFile(fileJob({ source: { driver: 'file', root: './vms', vm } }));
      const { code, stdout, stderr } = await runCli(['validate', path], { cwd: dir });
      expect({ vm, code, stdout }).toEqual({ vm, code: 2, stdout: '' });
      expect(stderr.trim().split('\n')).toHaveLength(1);
      expect(stderr).toMatch(/^replikit: E_JOB: .*source\.vm: .*folder name/);
      noStack(stderr);
    }
    const replica = await jobFile(
      fileJob({ target: { driver: 'file', root: './replicas', replicaName: 'a..b' }, name: 'cli' }),
    );
    const bad = await runCli(['validate', replica], { cwd: dir });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/target\.replicaName: /);
    // another driver's VM names are not paths: a slash is its business, NUL is refused everywhere
    const xen = (vm: string) => ({ ...fileJob(), source: { driver: 'xen', vm, pool: 'p' }, method: 'xva' });
    expect((await runCli(['validate', await jobFile(xen('web/01'))], { cwd: dir })).stderr).not.toMatch(/source\.vm/);
    expect((await runCli(['validate', await jobFile(xen('a\u0000b'))], { cwd: dir })).stderr).toMatch(/source\.vm: /);
  });

  it('says a job file is missing or not YAML, in one line', async () => {
    const missing = await runCli(['validate', 'nope.yaml'], { cwd: dir });
    expect(missing.code).toBe(2);
    expect(missing.stderr.trim()).toMatch(/cannot read job file .*nope\.yaml: no such file$/);
    const bad = await runCli(['validate', await jobFile('name: [unclosed')], { cwd: dir });
    expect(bad.code).toBe(2);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
  });
});

describe('replikit run', () => {
  it('fails with one clear line when the VM folder is missing', async () => {
    const { code, stderr } = await runCli(['run', await jobFile(fileJob())], { cwd: dir });
    expect(code).toBe(1);
    expect(
      stderr
        .trim()
        .split('\n')
        .filter((l) => l.startsWith('replikit:')),
    ).toHaveLength(1);
    expect(stderr).toMatch(/E_NOT_FOUND: .*web/);
    noStack(stderr);
  });

  it('fails with one clear line when a disk image is shorter than vm.json says', async () => {
    await createFileVM(join(dir, 'vms'), { name: 'web', disks: [{ id: 'system', size: 4 * MiB }] });
    await truncate(join(dir, 'vms', 'web', 'system.raw'), MiB);
    const { code, stderr } = await runCli(['run', await jobFile(fileJob())], { cwd: dir });
    expect(code).toBe(1);
    const line = stderr
      .trim()
      .split('\n')
      .find((l) => l.startsWith('replikit:'))!;
    expect(line).toMatch(/E_FORMAT/);
    expect(line).toMatch(/system/);
    noStack(stderr);
  });

  it('runs a job, prints its summary, and lists it in `runs`', async () => {
    await createFileVM(join(dir, 'vms'), { name: 'web', disks: [{ id: 'system', size: 4 * MiB }] });
    const run = await runCli(['run', await jobFile(fileJob())], { cwd: dir });
    expect(run.stderr).toContain('completed');
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/run cli-\S+ \(job cli\) completed/);
    const runs = await runCli(['runs'], { cwd: dir });
    expect(runs.code).toBe(0);
    expect(runs.stdout).toMatch(/cli-\S+\s+cli\s+completed/);
  });

  it('rejects unknown commands and flags with exit 2', async () => {
    expect((await runCli(['frobnicate'])).code).toBe(2);
    const flag = await runCli(['runs', '--nope']);
    expect(flag.code).toBe(2);
    expect(flag.stderr.trim().split('\n')).toHaveLength(1);
  });
});

describe('replikit demo', () => {
  it('replicates twice and verifies the replica (small disks)', async () => {
    const { code, stdout } = await runCli(
      ['demo', '--size-a', '8MiB', '--size-b', '4MiB', '--dir', join(dir, 'demo')],
      {
        cwd: dir,
      },
    );
    expect(stdout).toContain('verification passed');
    expect(stdout).toMatch(/second replication/);
    expect(code).toBe(0);
  });
});
