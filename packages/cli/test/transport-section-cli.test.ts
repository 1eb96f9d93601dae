import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { runCli } from './helpers/cli-harness.js';

let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'replikit-transport-section-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function jobFile(transport: Record<string, unknown>): Promise<string> {
  const path = join(dir, 'job.yaml');
  const job = {
    name: 'remote',
    source: { driver: 'file', root: './vms', vm: 'web' },
    target: { driver: 'file', root: './replicas' },
    method: 'qhybrid',
    transport,
  };
  await writeFile(path, stringify(job));
  return path;
}

const psk = { identity: 'site-b', keyFile: './site-b.psk' };

/** The lines of `text` that are not empty. */
function lines(text: string): string[] {
  return text.split('\n').filter((line) => line.trim() !== '');
}

describe("the job's transport section is checked before anything runs", () => {
  for (const command of ['validate', 'run']) {
    it(`${command}: a misspelt field is one line naming it, exit 2, and no run is journaled`, async () => {
      const file = await jobFile({ kind: 'tls', address: '127.0.0.1:7400', psk });
      const { code, stdout, stderr } = await runCli([command, file], { cwd: dir });
      expect({ code, stdout }).toEqual({ code: 2, stdout: '' });
      expect(lines(stderr)).toHaveLength(1);
      expect(stderr).toMatch(/^replikit: E_JOB: .*transport\.address: unknown field/);
      const runs = await runCli(['runs', '--json'], { cwd: dir });
      expect(JSON.parse(runs.stdout)).toEqual([]);
    });
  }

  it('names a codec this runtime does not have, before anything runs', async () => {
    const result = await runCli(
      ['validate', await jobFile({ kind: 'tls', agent: '10.0.0.7:7400', psk, codec: 'lz5' })],
      {
        cwd: dir,
      },
    );
    expect(result.code).toBe(2);
    expect(lines(result.stderr)).toHaveLength(1);
    expect(result.stderr).toMatch(/transport\.codec: unknown codec 'lz5'; use auto or one of none, /);
  });

  it('names a network section that says neither where the agent is nor where to wait for it', async () => {
    const { code, stderr } = await runCli(['validate', await jobFile({ kind: 'tcp' })], { cwd: dir });
    expect(code).toBe(2);
    expect(lines(stderr)).toHaveLength(1);
    expect(stderr).toMatch(/^replikit: E_JOB: .*transport\.agent/);
  });

  it('names an address without a port, and a field of a nested mapping', async () => {
    let result = await runCli(['validate', await jobFile({ kind: 'tls', agent: '10.0.0.7', psk })], { cwd: dir });
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/transport\.agent: .*host:port/);
    result = await runCli(
      ['validate', await jobFile({ kind: 'tls', agent: '10.0.0.7:7400', psk: { ...psk, keyfile: 'x' } })],
      { cwd: dir },
    );
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/transport\.psk\.keyfile: unknown field/);
  });

  it('accepts the documented fields (push and pull)', async () => {
    for (const transport of [
      { kind: 'tls', agent: '10.0.0.7:7400', psk, codec: 'none', window: '32MiB', bandwidthLimit: '50MB/s' },
      { kind: 'tcp', pull: { listen: '0.0.0.0:7401' }, key: { keyEnv: 'REPLIKIT_TRANSPORT_KEY' } },
      { kind: 'tls', agent: '[::1]:7400', certificate: { cert: 'me.pem', key: 'me.key', trust: ['ab'] } },
      { kind: 'inprocess' },
    ]) {
      const { code, stderr } = await runCli(['validate', await jobFile(transport)], { cwd: dir });
      expect({ code, stderr, transport }).toMatchObject({ code: 0, stderr: '' });
    }
  });
});
