import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { createNetworkTransport, dial } from '@replikit/transport';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

const agentBin = fileURLToPath(new URL('../src/agent-bin.ts', import.meta.url));
const tsxLoader = pathToFileURL(
  join(dirname(createRequire(import.meta.url).resolve('tsx/package.json')), 'dist', 'loader.mjs'),
).href;

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'replikit-agent-bin-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

function startAgent(args: string[], env: NodeJS.ProcessEnv) {
  const child = spawn(process.execPath, ['--conditions=@replikit/source', '--import', tsxLoader, agentBin, ...args], {
    env: { ...process.env, ...env, NODE_OPTIONS: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
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
});
