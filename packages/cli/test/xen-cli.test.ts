import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { populateDemo, startXapiSim, type XapiSim } from '@replikit/xapi-sim';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { runCommand } from '../src/commands/run.js';
import { vmCommand } from '../src/commands/vm.js';
import type { CliContext } from '../src/context.js';
import { Capture } from './helpers/cli-harness.js';

describe('jobs with driver: xen through the CLI, against the simulated demo pool', () => {
  let dir: string;
  let sim: XapiSim;
  let xen: Record<string, string>;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'rk-cli-xen-'));
    sim = await startXapiSim({ dir, nbd: true });
    await populateDemo(sim);
    const credentialsFile = join(dir, 'password');
    await writeFile(credentialsFile, `${sim.credentials.password}\n`, { mode: 0o600 });
    xen = { driver: 'xen', url: sim.url, credentialsFile };
  });
  afterAll(async () => {
    await sim.close();
    await rm(dir, { recursive: true, force: true });
  });

  const context = (): CliContext & { out: Capture } => {
    const out = new Capture();
    return {
      out,
      stdout: out as unknown as NodeJS.WriteStream,
      stderr: new Capture() as unknown as NodeJS.WriteStream,
      cwd: dir,
      env: {},
      signal: new AbortController().signal,
    };
  };

  const jobFile = async (name: string, job: Record<string, unknown>) => {
    const file = join(dir, `${name}.yaml`);
    await writeFile(file, stringify({ name, ...job }));
    return file;
  };

  it('vm list --job lists the VMs of a xen source (no templates, snapshots or appliances)', async () => {
    const file = await jobFile('listing', {
      source: { ...xen, vm: 'web-01' },
      target: { driver: 'file', root: join(dir, 'replicas') },
      method: 'qhybrid',
    });
    const ctx = context();
    expect(await vmCommand(ctx, ['list'], { job: file, json: false, copy: false })).toBe(0);
    const names = ctx.out.text
      .trim()
      .split('\n')
      .map((line) => line.split('  ')[0]);
    expect(names.sort()).toEqual(['db-01', 'files-01', 'web-01']);
  });

  it('replikit run replicates xen ► xen with method xva (the driver package loaded by kind)', async () => {
    const file = await jobFile('xva-cli', {
      source: { ...xen, vm: 'db-01' },
      target: { ...xen, abd: { ips: ['127.0.0.70'] } },
      method: 'xva',
    });
    const ctx = context();
    expect(await runCommand(ctx, file, join(dir, 'state'))).toBe(0);
    expect(ctx.out.text).toMatch(/completed/);
    expect(ctx.out.text).toMatch(/METHOD_ALWAYS_FULL/);
  });
});
