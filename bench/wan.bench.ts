// Long links, per issue 18 point 4. A push session crosses the link emulator of the transport's
// test kit (a paced, delayed loopback proxy: there is no netem here) to a replikit agent in a
// forked process (the emulator in another) that checks each block's digest (xxh128, as replikit-agent) and discards it (the link is measured, not a disk). Reports the
// session's payload rate over the link's bandwidth, for each link shape, with the adaptive window
// (the default) and with a constant window given as `windowBytes` (how the window was sized before).
// Flags: --seconds=8 (data sent per case, in seconds of the link's bandwidth) --repeat=1
// --links=150ms@100Mbit,20ms@1Gbit (the link shapes; these two by default)
import { fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import type { DiskWriter, Hypervisor, Replica } from '@replikit/core';
import { createHashingPool } from '@replikit/dedup';
import { createAgent, createNetworkTransport, type Security } from '@replikit/transport';
import { startLinkEmulator } from '../packages/transport/src/testing/link-emulator.js';

const BLOCK = 64 * 1024;
const here = fileURLToPath(import.meta.url);

interface LinkCase {
  name: string;
  rttMs: number;
  bitsPerSecond: number;
}

const CASES: LinkCase[] = [
  { name: '150 ms, 100 Mbit/s', rttMs: 150, bitsPerSecond: 100e6 },
  { name: '20 ms, 1 Gbit/s', rttMs: 20, bitsPerSecond: 1e9 },
];

/**
 * Link shapes from `--links=RTT@RATE,...`, such as `300ms@50Mbit,5ms@10Gbit` (RTT in ms; rate in
 * kbit, Mbit or Gbit per second).
 */
function parseLinks(text: string): LinkCase[] {
  const units: Record<string, number> = { kbit: 1e3, mbit: 1e6, gbit: 1e9 };
  return text.split(',').map((item) => {
    const match = /^(\d+(?:\.\d+)?)ms@(\d+(?:\.\d+)?)(kbit|mbit|gbit)(?:\/s)?$/i.exec(item.trim());
    if (!match) throw new Error(`--links: expected RTT@RATE such as 150ms@100Mbit, got ${JSON.stringify(item)}`);
    const rttMs = Number(match[1]);
    const bitsPerSecond = Number(match[2]) * units[match[3]!.toLowerCase()]!;
    if (rttMs < 0 || bitsPerSecond < 1e5) throw new Error(`--links: ${item}: rate at least 100kbit`);
    return { name: `${rttMs} ms, ${match[2]} ${match[3]}/s`, rttMs, bitsPerSecond };
  });
}

function flag(flags: string[], name: string, fallback: string): string {
  return flags.find((f) => f.startsWith(`--${name}=`))?.split('=')[1] ?? fallback;
}

/** A target whose replica disk keeps nothing: the benchmark measures the link, not a disk. */
function discard(): Hypervisor {
  return {
    async openWriter(_replica: Replica, disk: { size: number }): Promise<DiskWriter> {
      return {
        size: disk.size,
        async write() {},
        async writeZeroes() {},
        flush: () => Promise.resolve(),
        close: () => Promise.resolve(),
      } as unknown as DiskWriter;
    },
  } as unknown as Hypervisor;
}

/** The forked agent: answers its port. */
async function peer(): Promise<void> {
  const key = Buffer.from(process.env.BENCH_KEY!, 'hex');
  // Digests checked as replikit-agent checks them: xxh128 on the dedup package's pool.
  const agent = createAgent({
    target: discard(),
    security: { kind: 'tcp', key },
    hasher: (algorithm) => createHashingPool({ algorithm }),
  });
  const address = await agent.listen({ host: '127.0.0.1', port: 0 });
  process.on('message', () => process.exit(0));
  process.send!({ port: address.port });
}

/** The forked link: an emulated link in front of the agent per request (its own process, so
 * that pacing runs on a loop of its own, as a router would). */
async function link(): Promise<void> {
  const port = Number(process.env.BENCH_AGENT_PORT);
  process.on('message', async (message: { rttMs: number; bitsPerSecond: number } | { exit: true }) => {
    if ('exit' in message) process.exit(0);
    const emulated = await startLinkEmulator({ host: '127.0.0.1', port }, message);
    process.send!({ port: emulated.address.port });
  });
  process.send!({ ready: true });
}

async function session(port: number, security: Security, blocks: Uint8Array[], adaptiveWindow: boolean) {
  const transport = createNetworkTransport({
    address: { host: '127.0.0.1', port },
    security,
    codec: 'none',
    adaptiveWindow,
  });
  const disk = { id: 'd0', vmId: 'replica', size: blocks.length * BLOCK };
  const replica = { id: 'replica', name: 'replica', disks: [disk], created: true } as unknown as Replica;
  const channel = await transport.open({ runId: 'bench', replica, blockSize: BLOCK, digest: 'xxh128' });
  const stream = await channel.openDisk(disk);
  // Timed from the first block to the last ack: the handshake's round trips are not the link's rate.
  const start = performance.now();
  for (const [index, data] of blocks.entries()) {
    await stream.send({ kind: 'data', index, data, digest: digests.get(data)! });
  }
  await stream.checkpoint();
  const seconds = (performance.now() - start) / 1000;
  // The window it reached, and the round trip it measured (not public API: for this report only).
  const sizer = (stream as unknown as { sizer: { limit: number; rttMs?: number } }).sizer;
  await stream.close();
  await channel.close();
  return { rate: (blocks.length * BLOCK * 8) / seconds, window: sizer.limit, rttMs: sizer.rttMs ?? 0 };
}

const digests = new Map<Uint8Array, Uint8Array>();
/** The window as it was before it adapted: the constant `windowBytes` default. */
const CONSTANT_WINDOW = 32 * 1024 * 1024;

export async function run(flags: string[]): Promise<void> {
  const seconds = Number(flag(flags, 'seconds', '8'));
  const repeat = Math.max(1, Number(flag(flags, 'repeat', '1')));
  const links = flags.some((f) => f.startsWith('--links=')) ? parseLinks(flag(flags, 'links', '')) : CASES;
  const key = randomBytes(32);
  const hasher = await createHashingPool({ algorithm: 'xxh128' });
  const security: Security = { kind: 'tcp', key };
  const start = (role: string, env: Record<string, string>) =>
    fork(here, [role], {
      execArgv: ['--conditions=@replikit/source', '--import', 'tsx'],
      env: { ...process.env, ...env },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
  const answerOf = (from: ReturnType<typeof fork>) =>
    new Promise<{ port: number }>((resolve) => from.once('message', (m) => resolve(m as never)));
  const agent = start('--peer', { BENCH_KEY: key.toString('hex') });
  const agentPort = (await answerOf(agent)).port;
  const child = start('--link', { BENCH_AGENT_PORT: String(agentPort) });
  const answer = () => answerOf(child);
  await answer();
  try {
    console.log(
      `push session, codec none, random 64 KiB blocks, through the link emulator; ${seconds} s of link bandwidth per case`,
    );
    for (const link of links) {
      const count = Math.ceil(((link.bitsPerSecond / 8) * seconds) / BLOCK);
      // 256 distinct random blocks, repeated: the codec is `none`, so repeats cost as much as new data.
      const pool = Array.from({ length: 256 }, () => randomBytes(BLOCK));
      for (const data of pool) digests.set(data, (await hasher.hash([data]))[0]!);
      const blocks = Array.from({ length: count }, (_, i) => pool[i % pool.length]!);
      const ratios: Record<string, number[]> = { adaptive: [], constant: [] };
      const reached: string[] = [];
      for (let i = 0; i < repeat; i++) {
        for (const mode of ['adaptive', 'constant'] as const) {
          child.send({ rttMs: link.rttMs, bitsPerSecond: link.bitsPerSecond });
          const { port } = await answer();
          const result = await session(port, security, blocks, mode === 'adaptive');
          ratios[mode]!.push(result.rate / link.bitsPerSecond);
          if (mode === 'adaptive')
            reached.push(`${(result.window / 2 ** 20).toFixed(1)} MiB at ${result.rttMs.toFixed(0)} ms`);
        }
      }
      const show = (values: number[]) => values.map((v) => `${(v * 100).toFixed(0)} %`).join(' / ');
      console.log(
        `${link.name.padEnd(20)} achieved/link: adaptive window ${show(ratios.adaptive!)} (window ${reached.join(' / ')}); constant ${CONSTANT_WINDOW >> 20} MiB window (before) ${show(ratios.constant!)}`,
      );
      digests.clear();
    }
  } finally {
    await hasher.close?.();
    child.send({ exit: true });
    agent.send({ exit: true });
  }
}

if (process.argv.includes('--peer')) await peer();
if (process.argv.includes('--link')) await link();
