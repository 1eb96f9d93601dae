import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { runCli } from './helpers/cli-harness.js';

let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'replikit-driver-options-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function jobFile(job: unknown): Promise<string> {
  const path = join(dir, 'job.yaml');
  await writeFile(path, stringify(job));
  return path;
}

function fileJob(source: Record<string, unknown>, target: Record<string, unknown> = {}) {
  return {
    name: 'opts',
    source: { driver: 'file', root: './vms', vm: 'web', ...source },
    target: { driver: 'file', root: './replicas', ...target },
    method: 'qhybrid',
  };
}

/** The lines of `text` that are not empty. */
function lines(text: string): string[] {
  return text.split('\n').filter((line) => line.trim() !== '');
}

describe("the file driver's own options schema", () => {
  for (const command of ['validate', 'run']) {
    it(`${command}: an unknown field in source is one line naming it, exit 2`, async () => {
      const { code, stdout, stderr } = await runCli([command, await jobFile(fileJob({ rooot: 'x' }))], { cwd: dir });
      expect({ code, stdout }).toEqual({ code: 2, stdout: '' });
      expect(lines(stderr)).toHaveLength(1);
      expect(stderr).toMatch(/^replikit: E_JOB: .*source\.rooot: unknown field/);
    });
  }

  it('names a field of the target of the wrong type, exit 2', async () => {
    const { code, stderr } = await runCli(['validate', await jobFile(fileJob({}, { root: 5 }))], { cwd: dir });
    expect(code).toBe(2);
    expect(lines(stderr)).toHaveLength(1);
    expect(stderr).toMatch(/^replikit: E_JOB: .*target\.root: /);
  });

  it('names a missing root instead of replicating the working folder', async () => {
    const job = fileJob({});
    delete (job.target as Record<string, unknown>).root;
    const { code, stderr } = await runCli(['validate', await jobFile(job)], { cwd: dir });
    expect(code).toBe(2);
    expect(stderr).toMatch(/^replikit: E_JOB: .*target\.root: /);
  });

  it('accepts every field the file driver documents', async () => {
    const job = fileJob({ reflink: false }, { confine: true, reflink: true });
    const { code, stdout, stderr } = await runCli(['validate', await jobFile(job)], { cwd: dir });
    expect(stderr).toBe('');
    expect(stdout).toContain("job 'opts' is valid");
    expect(code).toBe(0);
  });
});

describe('a Xen ► Hyper-V job (the CLI ships the xen and hyperv drivers)', () => {
  const x2h = (target: Record<string, unknown>) =>
    jobFile({
      name: 'x2h',
      source: {
        driver: 'xen',
        vm: 'db',
        pool: 'p1',
        url: 'https://xen1.example',
        passwordEnv: 'XEN_PASSWORD',
        abd: { ips: ['10.0.0.5'] },
      },
      target: { driver: 'hyperv', ...target },
      method: 'qhybrid',
    });

  it("validates offline with both platforms' fields, exit 0, no package missing", async () => {
    const { code, stdout, stderr } = await runCli(['validate', await x2h({ replicaPath: 'D:\\Replicas' })], {
      cwd: dir,
    });
    expect(stderr).toBe('');
    expect(code).toBe(0);
    expect(stdout).not.toContain('driver-package-missing');
  });

  it("a field the hyperv driver does not know is an error (exit 2), from the hyperv driver's own schema", async () => {
    const { code, stderr } = await runCli(['validate', await x2h({ anyField: { the: 'driver judges it' } })], {
      cwd: dir,
    });
    expect(code).toBe(2);
    expect(stderr).toContain('target.anyField');
  });

  it("an empty abd.ips is an error (exit 2), now from the xen driver's own schema", async () => {
    const job = await jobFile({
      name: 'x2x',
      source: { driver: 'xen', vm: 'db', pool: 'p1', url: 'https://xen1.example', passwordEnv: 'XEN_PASSWORD' },
      target: { driver: 'xen', pool: 'p2', url: 'https://xen1.example', passwordEnv: 'XEN_PASSWORD', abd: { ips: [] } },
      method: 'qhybrid',
    });
    const { code, stderr } = await runCli(['validate', job], { cwd: dir });
    expect(code).toBe(2);
    expect(stderr).toMatch(/E_JOB: target\.abd\.ips/);
  });
});
