import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { ReplikitError } from '@replikit/core';
import { createFileDriver, createFileVM } from '@replikit/driver-file';
import { createVhdx } from '@replikit/formats';
import { createNetworkTransport, createRemoteTarget, dial, FEATURE_HOST_FILES } from '@replikit/transport';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

const agentBin = fileURLToPath(new URL('../src/agent-bin.ts', import.meta.url));
const tsxLoader = pathToFileURL(
  join(dirname(createRequire(import.meta.url).resolve('tsx/package.json')), 'dist', 'loader.mjs'),
).href;

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'replikit-agent-bin-'));
});
const started: ChildProcess[] = [];
afterEach(async () => {
  // An agent a failed test left running must not outlive the test.
  for (const child of started.splice(0))
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  await rm(dir, { recursive: true, force: true });
});

function startAgent(args: string[], env: NodeJS.ProcessEnv) {
  const child = spawn(process.execPath, ['--conditions=@replikit/source', '--import', tsxLoader, agentBin, ...args], {
    env: { ...process.env, ...env, NODE_OPTIONS: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  started.push(child);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => {
    stdout += chunk.toString();
  });
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const line = (pattern: RegExp) =>
    new Promise<RegExpExecArray>((resolve, reject) => {
      const check = () => {
        const match = pattern.exec(stdout);
        if (match) resolve(match);
      };
      child.stdout.on('data', check);
      child.on('close', () => reject(new Error(`agent exited before ${pattern}: ${stdout}${stderr}`)));
      check();
    });
  const exit = new Promise<{ code: number | null }>((resolve) => child.on('close', (code) => resolve({ code })));
  return { child, line, exit, output: () => stdout + stderr };
}

describe('replikit-agent', () => {
  it('listens with TLS-PSK from the environment, serves a session, and stops cleanly on SIGTERM', async () => {
    const key = randomBytes(32);
    const agent = startAgent(['--root', dir, '--listen', '127.0.0.1:0', '--psk-identity', 'site'], {
      REPLIKIT_AGENT_PSK: key.toString('hex'),
    });
    const [, port] = await agent.line(/listening on 127\.0\.0\.1:(\d+) \(tls\)/);
    const transport = createNetworkTransport({
      address: { host: '127.0.0.1', port: Number(port) },
      security: { kind: 'tls', psk: { identity: 'site', key } },
    });
    const channel = await transport.open({
      runId: 'r1',
      replica: { id: 'none', name: 'none', disks: [], created: false } as never,
      blockSize: 65536,
      digest: 'sha256',
    });
    await channel.close();
    await agent.line(/session \S+ run r1 from 127\.0\.0\.1:\d+: 0 bytes written, committed/);
    agent.child.kill('SIGTERM');
    expect((await agent.exit).code).toBe(0);
    expect(agent.output()).toMatch(/stopping: finishing the blocks in flight[\s\S]*stopped/);
  });

  it('--host-files serves the images under --root to a remoting hyperv driver, and nothing outside it', async () => {
    const key = randomBytes(32);
    const root = join(dir, 'host');
    await mkdir(root);
    const image = await createVhdx(join(root, 'web.vhdx'), { size: 4 * 2 ** 20 });
    await image.write(2 ** 20, new Uint8Array(4096).fill(7));
    await image.close();
    const agent = startAgent(['--root', root, '--host-files', '--listen', '127.0.0.1:0', '--psk-identity', 'hv'], {
      REPLIKIT_AGENT_PSK: key.toString('hex'),
    });
    const [, port] = await agent.line(/listening on 127\.0\.0\.1:(\d+) \(tls\)/);
    const target = createRemoteTarget({
      kind: 'hyperv',
      address: { host: '127.0.0.1', port: Number(port) },
      security: { kind: 'tls', psk: { identity: 'hv', key } },
    });
    try {
      expect(await target.supports(FEATURE_HOST_FILES)).toBe(true);
      const disk = await target.hostFiles().openImage(join(root, 'web.vhdx'));
      expect(disk.size).toBe(4 * 2 ** 20);
      expect(Buffer.from(await disk.read(2 ** 20, 4096)).equals(Buffer.alloc(4096, 7))).toBe(true);
      const extents = [];
      for await (const e of disk.allocated()) extents.push(e);
      expect(extents.some((e) => e.offset <= 2 ** 20 && e.offset + e.length >= 2 ** 20 + 4096)).toBe(true);
      await disk.close();
      const outside = await target
        .hostFiles()
        .readText(join(dir, 'elsewhere.json'))
        .catch((e: unknown) => e);
      expect((outside as ReplikitError).code).toBe('E_INPUT');
    } finally {
      await target.close();
    }
    agent.child.kill('SIGTERM');
    expect((await agent.exit).code).toBe(0);
  });

  it('refuses to start without a key, with a clear message and exit code 2', async () => {
    const agent = startAgent(['--root', dir], {});
    expect((await agent.exit).code).toBe(2);
    expect(agent.output()).toMatch(/replikit-agent: E_INPUT: TLS needs a pre-shared key/);
  });

  it('closes a connection that sends nothing after --idle-timeout, and refuses a bad value', async () => {
    const key = randomBytes(32);
    const bad = startAgent(['--root', dir, '--idle-timeout', 'soon'], { REPLIKIT_AGENT_PSK: key.toString('hex') });
    expect((await bad.exit).code).toBe(2);
    expect(bad.output()).toMatch(/--idle-timeout must be a number of seconds \(0: never\), got 'soon'/);
    const agent = startAgent(['--root', dir, '--listen', '127.0.0.1:0', '--idle-timeout', '0.2'], {
      REPLIKIT_AGENT_PSK: key.toString('hex'),
    });
    const [, port] = await agent.line(/listening on 127\.0\.0\.1:(\d+) \(tls\)/);
    const socket = await dial(
      { host: '127.0.0.1', port: Number(port) },
      {
        kind: 'tls',
        psk: { identity: 'replikit', key },
      },
    );
    const closed = new Promise((resolve) => socket.once('close', resolve));
    socket.resume();
    await agent.line(/closed idle connection from 127\.0\.0\.1:\d+: .*sent nothing for 200 ms/);
    await closed;
    agent.child.kill('SIGTERM');
    expect((await agent.exit).code).toBe(0);
  });

  it('writes only inside --root: a session whose replica claims another root is refused with E_INPUT', async () => {
    const served = join(dir, 'served');
    const outside = join(dir, 'outside');
    await mkdir(served);
    await mkdir(outside);
    // A replica elsewhere on the host, which the agent must never write.
    const source = await createFileVM(join(dir, 'vms-src'), { name: 'vm', disks: [{ id: 'd0', size: 1 << 20 }] });
    const owner = createFileDriver({ root: outside });
    const victim = await owner.ensureReplica({
      name: 'victim',
      source,
      disks: [{ sourceDiskId: 'd0', size: 1 << 20 }],
    });
    await owner.close();
    const agent = startAgent(['--root', served, '--listen', '127.0.0.1:0', '--tcp'], {});
    const [, port] = await agent.line(/listening on 127\.0\.0\.1:(\d+) \(tcp\)/);
    const transport = createNetworkTransport({
      address: { host: '127.0.0.1', port: Number(port) },
      security: { kind: 'tcp' },
      reconnect: { attempts: 1, initialDelayMs: 1, maxDelayMs: 1 },
    });
    const meta = { root: outside };
    const claimed = { ...victim, meta, disks: victim.disks.map((d) => ({ ...d, meta })) };
    const error = (await (async () => {
      const channel = await transport.open({ runId: 'evil', replica: claimed, blockSize: 65536, digest: 'sha256' });
      try {
        const disk = await channel.openDisk(claimed.disks[0]!);
        await disk.send({ kind: 'data', index: 0, data: new Uint8Array(65536).fill(0xee) });
        await disk.close();
      } finally {
        await channel.close();
      }
    })().then(
      () => undefined,
      (e: unknown) => e,
    )) as ReplikitError | undefined;
    expect(error?.code).toBe('E_INPUT');
    expect(error?.message).toMatch(/outside .*, the only folder this driver may touch/);
    const bytes = await readFile(join(outside, 'victim', 'd0.raw'));
    expect(bytes.every((b) => b === 0)).toBe(true);
    agent.child.kill('SIGTERM');
    expect((await agent.exit).code).toBe(0);
  });

  it('refuses a keyless --tcp agent on an address other than loopback, with exit code 2', async () => {
    const agent = startAgent(['--root', dir, '--listen', '0.0.0.0:0', '--tcp'], {});
    expect((await agent.exit).code).toBe(2);
    expect(agent.output()).toMatch(/replikit-agent: E_INPUT: plain --tcp without a key .*loopback/);
    expect(agent.output().trim().split('\n')).toHaveLength(1);
  });

  it('a bad --listen is E_INPUT with exit code 2', async () => {
    const agent = startAgent(['--root', dir, '--listen', 'nowhere', '--tcp'], {});
    expect((await agent.exit).code).toBe(2);
    expect(agent.output()).toMatch(/replikit-agent: E_INPUT: --listen must be HOST:PORT, got 'nowhere'/);
  });

  it('an address in use is E_CONFLICT with exit code 1', async () => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    try {
      const port = (taken.address() as { port: number }).port;
      const agent = startAgent(['--root', dir, '--listen', `127.0.0.1:${port}`, '--tcp'], {});
      expect((await agent.exit).code).toBe(1);
      expect(agent.output()).toMatch(
        new RegExp(`replikit-agent: E_CONFLICT: 127\\.0\\.0\\.1:${port} is already in use`),
      );
    } finally {
      taken.close();
    }
  });

  it('a missing --key-file is E_INPUT with exit code 2, not an unexpected ENOENT', async () => {
    const agent = startAgent(['--root', dir, '--key-file', join(dir, 'no-such.key')], {});
    expect((await agent.exit).code).toBe(2);
    expect(agent.output()).toMatch(/replikit-agent: E_INPUT: cannot read the key file .*no-such\.key/);
  });
});
