import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Hypervisor, parseJob } from '@replikit/core';
import { createHashingPool } from '@replikit/dedup';
import { createFileDriver } from '@replikit/driver-file';
import { createAgent } from '@replikit/transport';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { loadJobForCli } from '../src/job-file.js';
import { transportForJob } from '../src/transport-option.js';
import { runCli } from './helpers/cli-harness.js';
import { createRandomVm, digestOf } from './helpers/file-vm.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'replikit-transport-option-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const job = (transport: Record<string, unknown>) =>
  parseJob({
    name: 'j',
    source: { driver: 'file', root: dir, vm: 'v' },
    target: { driver: 'file', root: dir },
    method: 'qhybrid',
    transport: transport as never,
  });
const target = {} as Hypervisor;

describe('the transport section of a job', () => {
  it('inprocess by default, tls with a key file or a key variable, tcp, pull', async () => {
    const key = randomBytes(32).toString('hex');
    await writeFile(join(dir, 'psk.hex'), `${key}\n`);
    const context = { base: dir, env: { PSK: key } };
    expect(transportForJob(job({}), target, context).name).toBe('inprocess');
    const fromFile = job({ kind: 'tls', agent: '127.0.0.1:7400', psk: { identity: 'a', keyFile: 'psk.hex' } });
    expect(transportForJob(fromFile, target, context).name).toBe('tls');
    const fromEnv = job({ kind: 'tcp', agent: '127.0.0.1:7400', key: { keyEnv: 'PSK' }, codec: 'brotli' });
    expect(transportForJob(fromEnv, target, context).name).toBe('tcp');
    const pull = job({ kind: 'tls', pull: { listen: '127.0.0.1:0' }, psk: { keyEnv: 'PSK' } });
    expect(transportForJob(pull, target, context).name).toBe('tls');
  });

  it('says what is wrong with a bad section', () => {
    const context = { base: dir, env: {} };
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [{ kind: 'tls', agent: '127.0.0.1:7400' }, /needs psk or certificate/],
      [{ kind: 'tls', agent: 'nowhere', psk: { keyEnv: 'X' } }, /keyEnv names X, which is not set/],
      [{ kind: 'tls', agent: 'nowhere', psk: { identity: 'a' } }, /needs keyFile or keyEnv/],
      [{ kind: 'tcp', agent: 'nowhere' }, /transport.agent must be "host:port"/],
      [{ kind: 'tcp', agent: '127.0.0.1:1', codec: 'lz9' }, /unknown codec 'lz9'/],
    ];
    for (const [section, message] of cases) {
      expect(() => transportForJob(job(section), target, context)).toThrow(message);
    }
  });

  it('a tls job section reaches a running agent', async () => {
    const key = randomBytes(32);
    const agent = createAgent({
      target: createFileDriver({ root: dir }),
      security: { kind: 'tls', psk: { identity: 'site', key } },
    });
    const address = await agent.listen({ host: '127.0.0.1', port: 0 });
    try {
      const transport = transportForJob(
        job({ kind: 'tls', agent: `127.0.0.1:${address.port}`, psk: { identity: 'site', keyEnv: 'K' } }),
        target,
        { base: dir, env: { K: key.toString('hex') } },
      );
      // The session opens (auth passed); an unknown replica disk is then refused by the agent.
      const channel = await transport.open({
        runId: 'r',
        replica: { id: 'x', name: 'x', disks: [], created: false } as never,
        blockSize: 65536,
        digest: 'sha256',
      });
      await expect(channel.openDisk({ id: 'd', vmId: 'x', size: 65536 })).rejects.toThrow(/no disk 'd'/);
      await channel.close();
    } finally {
      await agent.stop();
    }
  });
});

describe('replikit run with a tls transport section', () => {
  it('replicates through a replikit agent, with xxh128 digests checked on the agent', async () => {
    const key = randomBytes(32);
    await writeFile(join(dir, 'site.psk'), key.toString('hex'));
    await createRandomVm(join(dir, 'vms'), 'web', [{ id: 'd0', size: 4 * 1024 * 1024 }], 0.6);
    const agent = createAgent({
      target: createFileDriver({ root: join(dir, 'replicas') }),
      security: { kind: 'tls', psk: { identity: 'site', key } },
      hasher: (algorithm) => createHashingPool({ algorithm }),
    });
    const address = await agent.listen({ host: '127.0.0.1', port: 0 });
    try {
      const jobFile = join(dir, 'job.yaml');
      await writeFile(
        jobFile,
        stringify({
          name: 'net',
          source: { driver: 'file', root: './vms', vm: 'web' },
          target: { driver: 'file', root: './replicas' },
          method: 'qhybrid',
          transport: {
            kind: 'tls',
            agent: `127.0.0.1:${address.port}`,
            psk: { identity: 'site', keyFile: join(dir, 'site.psk') },
          },
        }),
      );
      const { code, stdout, stderr } = await runCli(['run', jobFile, '--state-dir', join(dir, 'state')], { cwd: dir });
      expect(code, stderr).toBe(0);
      expect(stdout).toMatch(/completed/);
      const source = createFileDriver({ root: join(dir, 'vms') });
      const target = createFileDriver({ root: join(dir, 'replicas') });
      const vm = (await source.listVMs())[0]!;
      const replica = (await target.listVMs())[0]!;
      expect(await digestOf(target, replica.disks[0]!)).toBe(await digestOf(source, vm.disks[0]!));
      await source.close();
      await target.close();
    } finally {
      await agent.stop();
    }
  });

  it('resolves relative key and certificate files against the job file, not the working folder', async () => {
    const jobFile = join(dir, 'jobs', 'site.yaml');
    await mkdir(join(dir, 'jobs'));
    await writeFile(
      jobFile,
      stringify({
        name: 'j',
        source: { driver: 'file', root: 'vms', vm: 'v' },
        target: { driver: 'file', root: '/abs/replicas' },
        method: 'qhybrid',
        transport: {
          kind: 'tls',
          agent: '127.0.0.1:9',
          psk: { identity: 'a', keyFile: 'keys/site.psk' },
          certificate: { cert: 'me.pem', key: '/etc/me.key', trust: [] },
        },
      }),
    );
    const loaded = await loadJobForCli('jobs/site.yaml', dir);
    const transport = loaded.transport as Record<string, Record<string, unknown>>;
    expect(transport.psk!.keyFile).toBe(join(dir, 'jobs', 'keys', 'site.psk'));
    expect(transport.certificate!.cert).toBe(join(dir, 'jobs', 'me.pem'));
    expect(transport.certificate!.key).toBe('/etc/me.key');
    expect((loaded.source as unknown as { root: string }).root).toBe(join(dir, 'jobs', 'vms'));
  });
});

describe('file paths of a job endpoint', () => {
  it("resolves a xen endpoint's credentialsFile and spoolDir against the job file, like root", async () => {
    await mkdir(join(dir, 'jobs'));
    await writeFile(
      join(dir, 'jobs', 'xen.yaml'),
      stringify({
        name: 'x',
        source: { driver: 'xen', url: 'https://xen1.example', credentialsFile: 'secrets/xen1.pass', vm: 'db' },
        target: {
          driver: 'xen',
          url: 'https://xen2.example',
          credentialsFile: '/etc/replikit/xen2.pass',
          spoolDir: '../spool',
        },
        method: 'xva',
      }),
    );
    const loaded = await loadJobForCli('jobs/xen.yaml', dir);
    const [source, target] = [loaded.source, loaded.target] as unknown as Array<Record<string, string>>;
    expect(source!.credentialsFile).toBe(join(dir, 'jobs', 'secrets', 'xen1.pass'));
    expect(target!.credentialsFile).toBe('/etc/replikit/xen2.pass');
    expect(target!.spoolDir).toBe(join(dir, 'spool'));
  });
});

describe('a key or certificate file that cannot be read', () => {
  it('is a one-line E_INPUT naming the field and the file, and `replikit run` exits 2', async () => {
    const missing = join(dir, 'nowhere.psk');
    for (const section of [
      { kind: 'tls', agent: '127.0.0.1:9', psk: { identity: 'a', keyFile: missing } },
      { kind: 'tcp', agent: '127.0.0.1:9', key: { keyFile: missing } },
      { kind: 'tls', agent: '127.0.0.1:9', certificate: { cert: missing, key: missing, trust: [] } },
    ]) {
      expect(() => transportForJob(job(section), target, { base: dir, env: {} })).toThrow(
        expect.objectContaining({ code: 'E_INPUT', message: expect.stringMatching(/^transport\.[^\n]*nowhere\.psk/) }),
      );
    }
    await createRandomVm(join(dir, 'vms'), 'web', [{ id: 'd0', size: 1024 * 1024 }], 0.5);
    const jobFile = join(dir, 'job.yaml');
    await writeFile(
      jobFile,
      stringify({
        name: 'net',
        source: { driver: 'file', root: './vms', vm: 'web' },
        target: { driver: 'file', root: './replicas' },
        method: 'qhybrid',
        transport: { kind: 'tls', agent: '127.0.0.1:9', psk: { identity: 'site', keyFile: 'nowhere.psk' } },
      }),
    );
    const { code, stderr } = await runCli(['run', jobFile, '--state-dir', join(dir, 'state')], { cwd: dir });
    expect(code).toBe(2);
    // the last line of stderr (progress lines come before it) is the error, on one line
    expect(stderr.trimEnd().split('\n').at(-1)).toMatch(
      /^replikit: E_INPUT: transport\.psk\.keyFile: [^\n]*nowhere\.psk/,
    );
    expect(stderr).not.toMatch(/unexpected/);
  });
});
