import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseJob } from '@replikit/core';
import { createFileDriver, writeGuestDisk } from '@replikit/driver-file';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { missingDriverPackages } from '../src/commands/validate.js';
import { runCli } from './helpers/cli-harness.js';
import { createRandomVm } from './helpers/file-vm.js';

let dir: string;
const MiB = 1024 * 1024;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'replikit-dr-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function jobFile(job: unknown, name = 'job.yaml'): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, stringify(job));
  return path;
}

const fileJob = {
  name: 'dr',
  source: { driver: 'file', root: './vms', vm: 'web' },
  target: { driver: 'file', root: './replicas' },
  method: 'qhybrid',
};

/** A replica with two restore points: the first holds `first`, the second `second` at offset 0. */
async function replicaWithTwoPoints(): Promise<{ job: string; first: Buffer; second: Buffer }> {
  await createRandomVm(join(dir, 'vms'), 'web', [{ id: 'd0', size: 2 * MiB }]);
  const job = await jobFile(fileJob);
  expect((await runCli(['run', job], { cwd: dir })).code).toBe(0);
  const first = await readFile(join(dir, 'replicas', 'web-replica', 'd0.raw'));
  await writeGuestDisk(join(dir, 'vms'), 'web', 'd0', 0, Buffer.alloc(65536, 7));
  expect((await runCli(['run', job], { cwd: dir })).code).toBe(0);
  const second = await readFile(join(dir, 'replicas', 'web-replica', 'd0.raw'));
  expect(second.equals(first)).toBe(false);
  return { job, first, second };
}

describe('replikit --version and help', () => {
  it('--version prints the CLI package version', async () => {
    const pkg = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
    const { code, stdout } = await runCli(['--version'], { cwd: dir });
    expect(code).toBe(0);
    expect(stdout.trim()).toBe(`replikit ${pkg.version}`);
  });

  it('help names replikit-agent, the transport section, where state lives and points', async () => {
    const { code, stdout } = await runCli(['help'], { cwd: dir });
    expect(code).toBe(0);
    expect(stdout).toContain('replikit-agent');
    expect(stdout).toContain('transport');
    expect(stdout).toContain('points list');
    expect(stdout).toContain('revert <job> <point-id>');
    expect(stdout).toContain(join(dir, '.replikit'));
  });
});

describe('replikit validate with a driver that is not installed', () => {
  // The CLI ships the file, xen and hyperv drivers; a known kind can still lack its package in a
  // partial install, which the importer stands for here.
  it('warns that @replikit/driver-hyperv is missing and says how to install it', async () => {
    const job = parseJob({
      name: 'h2f',
      source: { driver: 'hyperv', vm: 'db' },
      target: { driver: 'file', root: './replicas' },
      method: 'qhybrid',
    });
    const gone = Object.assign(new Error("Cannot find package '@replikit/driver-hyperv'"), {
      code: 'ERR_MODULE_NOT_FOUND',
    });
    const warnings = await missingDriverPackages(job, async (name) => {
      if (name === '@replikit/driver-hyperv') throw gone;
      return import(name);
    });
    expect(warnings).toEqual([
      expect.objectContaining({
        ruleId: 'driver-package-missing',
        severity: 'warning',
        message: expect.stringContaining("'hyperv'"),
        fix: expect.stringContaining('npm install @replikit/driver-hyperv'),
      }),
    ]);
  });

  it('says nothing of the kind for the drivers the CLI ships (file, hyperv)', async () => {
    const { stdout } = await runCli(['validate', await jobFile(fileJob)], { cwd: dir });
    expect(stdout).not.toContain('driver-package-missing');
    const job = await jobFile({
      name: 'h2f',
      source: { driver: 'hyperv', vm: 'db' },
      target: { driver: 'file', root: './replicas' },
      method: 'qhybrid',
    });
    const hyperv = await runCli(['validate', job], { cwd: dir });
    expect(hyperv.stdout).not.toContain('driver-package-missing');
  });
});

describe('replikit points', () => {
  it('lists the restore points and reverts the replica to an older one, bytes equal', async () => {
    const { job, first } = await replicaWithTwoPoints();
    const listed = await runCli(['points', 'list', job, '--json'], { cwd: dir });
    expect(listed.code).toBe(0);
    const points = JSON.parse(listed.stdout) as Array<{ id: string }>;
    expect(points).toHaveLength(2);
    const text = await runCli(['points', 'list', job], { cwd: dir });
    for (const point of points) expect(text.stdout).toContain(point.id);

    const reverted = await runCli(['points', 'revert', job, points[0]!.id], { cwd: dir });
    expect(reverted.stderr).toBe('');
    expect(reverted.code).toBe(0);
    expect(reverted.stdout).toContain('the 1 newer point dropped');
    expect((await readFile(join(dir, 'replicas', 'web-replica', 'd0.raw'))).equals(first)).toBe(true);
    const after = JSON.parse((await runCli(['points', 'list', job, '--json'], { cwd: dir })).stdout) as unknown[];
    expect(after).toEqual([points[0]]);
    // The revert released its hold: the next run takes the replica.
    expect((await runCli(['run', job], { cwd: dir })).code).toBe(0);
  });

  it('refuses to revert while a run holds the replica, and keeps that hold', async () => {
    const { job, second } = await replicaWithTwoPoints();
    const points = JSON.parse((await runCli(['points', 'list', job, '--json'], { cwd: dir })).stdout) as Array<{
      id: string;
    }>;
    const driver = createFileDriver({ root: join(dir, 'replicas') });
    const vm = await driver.getVM('web-replica');
    const replica = { id: vm.id, name: vm.name, disks: vm.disks, created: false };
    const owner = { runId: 'run-held', host: 'elsewhere', pid: 4242, startedAt: new Date().toISOString() };
    expect((await driver.claimReplica(replica, owner)).runId).toBe('run-held');
    const refused = await runCli(['points', 'revert', job, points[0]!.id], { cwd: dir });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^replikit: E_CONFLICT: .*run-held/);
    expect((await driver.replicaOwner(replica))?.runId).toBe('run-held');
    expect((await readFile(join(dir, 'replicas', 'web-replica', 'd0.raw'))).equals(second)).toBe(true);
    await driver.releaseReplica(replica, 'run-held');
    await driver.close();
  });

  it('run of a job naming a kind not installed (a third-party one) stops with the install command', async () => {
    const job = await jobFile({
      name: 'a2f',
      source: { driver: 'acme', vm: 'db' },
      target: { driver: 'file', root: './replicas' },
      method: 'qhybrid',
    });
    const { code, stderr } = await runCli(['run', job], { cwd: dir });
    expect(code).toBe(1);
    expect(stderr).toMatch(/^replikit: E_NOT_FOUND: .*'acme' is not installed.*npm install @replikit\/driver-acme/);
  });

  it('says which point ids exist when the id is wrong (exit 1, E_NOT_FOUND)', async () => {
    const { job } = await replicaWithTwoPoints();
    const { code, stderr } = await runCli(['points', 'revert', job, 'nope'], { cwd: dir });
    expect(code).toBe(1);
    expect(stderr).toMatch(/^replikit: E_NOT_FOUND: .*'nope'.*points list/);
  });
});
