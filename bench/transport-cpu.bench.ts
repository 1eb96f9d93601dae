// What a TLS session costs in CPU, per issue 18 point 3: CPU-seconds per GiB at each end, measured
// with `process.cpuUsage()` inside each process (every thread of it: the agent's hashing threads
// count), not wall time, which two cores shared by both ends and the writer make swing. The source
// is this process; the receiver is a forked process writing into a file-driver replica whose file
// is already in the page cache (an untimed first round writes it); a third process runs the link
// emulator for the slow-link cases. Cases, interleaved, `--repeat` times, medians:
//   bare      a bare TLS socket; the receiver writes what it reads into a file (4 MiB writev)
//   none      a session with codec `none`, random data
//   none½     a session with codec `none`, half-compressible data (32 KiB of log text, 32 random)
//   auto½     the default codec (`auto`) on the same half-compressible data
// then, through the link emulator at 100 Mbit/s and 10 ms (`--wan-size` each): none½ and auto½,
// with the bytes that crossed the link. Goals: CPU-s/GiB at each end ≤ 1.2× the bare socket's
// (none, random data); auto½ ≤ 1.3× the CPU of none½ on loopback; ≤ 0.6× its bytes on the slow link.
// Flags: --size=512MiB --wan-size=128MiB --repeat=5 --only=loopback,wan
import { fork } from 'node:child_process';
import { randomBytes, randomFillSync } from 'node:crypto';
import { closeSync, openSync, writevSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import type net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { formatBytes, parseSize, type Replica } from '@replikit/core';
import { createHashingPool } from '@replikit/dedup';
import { createFileDriver } from '@replikit/driver-file';
import { availableCodecs, createAgent, createNetworkTransport, type Security } from '@replikit/transport';
import { startLinkEmulator } from '../packages/transport/src/testing/link-emulator.js';

const BLOCK = 64 * 1024;
const GiB = 1024 ** 3;
const STRIPE = 4 * 1024 * 1024;
const CIPHERS = 'TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384';
const here = fileURLToPath(import.meta.url);

interface Block {
  index: number;
  data: Uint8Array;
  digest: Uint8Array;
}

type Cpu = NodeJS.CpuUsage;
const cpuSeconds = (usage: Cpu) => (usage.user + usage.system) / 1e6;

function flag(flags: string[], name: string, fallback: string): string {
  return flags.find((f) => f.startsWith(`--${name}=`))?.split('=')[1] ?? fallback;
}

function logText(length: number, seed: number): Buffer {
  const lines: string[] = [];
  let total = 0;
  for (let i = 0; total < length; i++) {
    const line = `2026-12-06T11:${String(i % 60).padStart(2, '0')}:07Z host=vm${seed} unit=app[${1000 + (i % 17)}] request=${seed * 7 + i} status=${i % 13 ? 200 : 404} bytes=${(i * 7919) % 65536}\n`;
    lines.push(line);
    total += line.length;
  }
  return Buffer.from(lines.join('')).subarray(0, length);
}

/** `count` blocks, random or half-compressible (32 KiB of log text, then 32 KiB of random). */
async function makeBlocks(count: number, kind: 'random' | 'half'): Promise<Block[]> {
  const hasher = await createHashingPool({ algorithm: 'xxh128' });
  const text = logText(STRIPE, 1);
  const blocks: Block[] = [];
  for (let start = 0; start < count; start += STRIPE / BLOCK) {
    const stripe = randomFillSync(Buffer.allocUnsafe(STRIPE));
    for (let at = 0; at < STRIPE && start + at / BLOCK < count; at += BLOCK) {
      const data = new Uint8Array(stripe.buffer, stripe.byteOffset + at, BLOCK);
      if (kind === 'half') data.set(text.subarray(at, at + BLOCK / 2));
      const [digest] = await hasher.hash([data]);
      blocks.push({ index: start + at / BLOCK, data, digest: new Uint8Array(digest!) });
    }
  }
  await hasher.close?.();
  return blocks;
}

// ── the receiver process ──────────────────────────────────────────────────────────────────────

async function receiver(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'replikit-bench-cpu-'));
  const psk = Buffer.from(process.env.BENCH_PSK!, 'hex');
  const size = Number(process.env.BENCH_SIZE);
  const send = (message: unknown) => process.send!(message);
  const driver = createFileDriver({ root: dir });
  const disk = { id: 'd0', vmId: 'src', size };
  const source = { id: 'src', name: 'src', cpus: 1, memoryMiB: 512, powerState: 'running' as const, disks: [disk] };
  const replica = await driver.ensureReplica({ name: 'bench', source, disks: [{ sourceDiskId: 'd0', size }] });
  const agent = createAgent({
    target: driver,
    security: { kind: 'tls', psk: { identity: 'bench', key: psk } },
    hasher: (algorithm) => createHashingPool({ algorithm }),
  });
  const agentPort = (await agent.listen({ host: '127.0.0.1', port: 0 })).port;
  const bareFile = join(dir, 'bare.raw');
  let mark: Cpu | undefined;
  let points = 0;

  // A bare TLS server: reads `bytes`, writes them into one file (4 MiB writev at a time), answers.
  const bare = tls.createServer({ pskCallback: () => psk, ciphers: CIPHERS }, (socket) => {
    const start = process.cpuUsage();
    const fd = openSync(bareFile, 'a+');
    closeSync(fd);
    const file = openSync(bareFile, 'r+');
    let gathered: Buffer[] = [];
    let held = 0;
    let position = 0;
    const flush = () => {
      let done = 0;
      while (done < held) {
        const n = writevSync(file, gathered, position + done);
        done += n;
        if (done < held) gathered = [Buffer.concat(gathered).subarray(n)];
      }
      position += held;
      gathered = [];
      held = 0;
    };
    socket.on('data', (chunk: Buffer) => {
      gathered.push(chunk);
      held += chunk.length;
      if (held >= STRIPE) flush();
      if (position + held >= size) {
        flush();
        closeSync(file);
        send({ cpu: process.cpuUsage(start) });
        socket.end('k');
      }
    });
  });
  await new Promise<void>((resolve) => bare.listen(0, '127.0.0.1', resolve));
  const barePort = (bare.address() as net.AddressInfo).port;

  process.on('message', async (message: { cmd: string }) => {
    if (message.cmd === 'cpu-start') {
      mark = process.cpuUsage();
      send({ ok: true });
    } else if (message.cmd === 'cpu-end') {
      send({ cpu: process.cpuUsage(mark) });
    } else if (message.cmd === 'restore-point') {
      // Outside the timed part: what the sessions wrote becomes a restore point, as a run ends.
      await driver.createRestorePoint(replica, `bench-${points++}`);
      send({ ok: true });
    } else if (message.cmd === 'exit') {
      await agent.stop();
      bare.close();
      await rm(dir, { recursive: true, force: true });
      process.exit(0);
    }
  });
  send({ agentPort, barePort, replica });
}

// ── the link process ──────────────────────────────────────────────────────────────────────────

async function link(): Promise<void> {
  const target = { host: '127.0.0.1', port: Number(process.env.BENCH_TARGET) };
  const emulator = await startLinkEmulator(target, { rttMs: 10, bitsPerSecond: 100e6 });
  process.on('message', (message: { cmd: string }) => {
    if (message.cmd === 'delivered') process.send!({ up: emulator.delivered.up });
    else if (message.cmd === 'exit') void emulator.close().then(() => process.exit(0));
  });
  process.send!({ port: emulator.address.port });
}

// ── the source side ───────────────────────────────────────────────────────────────────────────

function child(role: string, env: Record<string, string>) {
  const proc = fork(here, [`--${role}`], {
    execArgv: [
      '--conditions=@replikit/source',
      '--import',
      'tsx',
      ...(process.env.BENCH_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_PROF}`] : []),
    ],
    env: { ...process.env, ...env },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const next = <T>() => new Promise<T>((resolve) => proc.once('message', (m) => resolve(m as T)));
  const ask = <T>(message: unknown) => {
    const answer = next<T>();
    proc.send(message as never);
    return answer;
  };
  return { proc, next, ask };
}

interface Measure {
  sender: number;
  receiver: number;
  seconds: number;
  wire: number;
  raw: number;
}

async function bareRun(port: number, psk: Buffer, blocks: Block[], peer: ReturnType<typeof child>): Promise<Measure> {
  const cpu = peer.next<{ cpu: Cpu }>();
  const start = performance.now();
  const mark = process.cpuUsage();
  const socket = tls.connect({
    port,
    host: '127.0.0.1',
    pskCallback: () => ({ psk, identity: 'bench' }),
    ciphers: CIPHERS,
    checkServerIdentity: () => undefined,
  });
  await new Promise<void>((resolve, reject) => {
    socket.once('secureConnect', () => resolve());
    socket.once('error', reject);
  });
  const done = new Promise<void>((resolve) => socket.once('data', () => resolve()));
  for (const block of blocks) {
    if (!socket.write(block.data)) await new Promise((resolve) => socket.once('drain', resolve));
  }
  await done;
  const sender = cpuSeconds(process.cpuUsage(mark));
  const seconds = (performance.now() - start) / 1000;
  socket.destroy();
  const raw = blocks.length * BLOCK;
  return { sender, receiver: cpuSeconds((await cpu).cpu), seconds, wire: raw, raw };
}

async function sessionRun(
  port: number,
  security: Security,
  codec: string,
  blocks: Block[],
  replica: Replica,
  peer: ReturnType<typeof child>,
): Promise<Measure> {
  const transport = createNetworkTransport({ address: { host: '127.0.0.1', port }, security, codec });
  const disk = replica.disks[0]!;
  await peer.ask({ cmd: 'cpu-start' });
  const start = performance.now();
  const mark = process.cpuUsage();
  const channel = await transport.open({ runId: 'bench', replica, blockSize: BLOCK, digest: 'xxh128' });
  const stream = await channel.openDisk(disk);
  for (const block of blocks) {
    await stream.send({ kind: 'data', index: block.index, data: block.data, digest: block.digest });
  }
  await stream.checkpoint();
  const wire = stream.bytesSent;
  await stream.close();
  await channel.close();
  const sender = cpuSeconds(process.cpuUsage(mark));
  const seconds = (performance.now() - start) / 1000;
  const receiver = cpuSeconds((await peer.ask<{ cpu: Cpu }>({ cmd: 'cpu-end' })).cpu);
  await peer.ask({ cmd: 'restore-point' });
  return { sender, receiver, seconds, wire, raw: blocks.length * BLOCK };
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

function summary(runs: Measure[]) {
  const perGiB = (pick: (m: Measure) => number) => median(runs.map((m) => (pick(m) / m.raw) * GiB));
  return {
    sender: perGiB((m) => m.sender),
    receiver: perGiB((m) => m.receiver),
    mbs: median(runs.map((m) => m.raw / m.seconds / 1e6)),
    wire: median(runs.map((m) => m.wire / m.raw)),
    spread: (pick: (m: Measure) => number) => runs.map((m) => ((pick(m) / m.raw) * GiB).toFixed(2)).join('/'),
  };
}

export async function run(flags: string[]): Promise<void> {
  const size = parseSize(flag(flags, 'size', '512MiB'), '--size');
  const wanSize = parseSize(flag(flags, 'wan-size', '128MiB'), '--wan-size');
  const repeat = Math.max(1, Number(flag(flags, 'repeat', '5')));
  const only = flag(flags, 'only', 'loopback,wan').split(',');
  const count = Math.ceil(size / BLOCK);
  const random = await makeBlocks(count, 'random');
  const half = await makeBlocks(count, 'half');
  const psk = randomBytes(32);
  const security: Security = { kind: 'tls', psk: { identity: 'bench', key: psk } };
  console.log(
    `${formatBytes(count * BLOCK)} per transfer, TLS-PSK, ${repeat} rounds interleaved after an untimed one, medians; codecs here: ${availableCodecs().join(', ')} (Node ${process.versions.node})`,
  );
  const peer = child('receiver', { BENCH_PSK: psk.toString('hex'), BENCH_SIZE: String(count * BLOCK) });
  const { agentPort, barePort, replica } = await peer.next<{ agentPort: number; barePort: number; replica: Replica }>();
  try {
    if (only.includes('loopback')) {
      const cases: Record<string, Measure[]> = { bare: [], none: [], 'none½': [], 'auto½': [] };
      const once = async (keep: boolean) => {
        const measures: Array<[string, Measure]> = [
          ['bare', await bareRun(barePort, psk, random, peer)],
          ['none', await sessionRun(agentPort, security, 'none', random, replica, peer)],
          ['none½', await sessionRun(agentPort, security, 'none', half, replica, peer)],
          ['auto½', await sessionRun(agentPort, security, 'auto', half, replica, peer)],
        ];
        if (keep) for (const [name, m] of measures) cases[name]!.push(m);
      };
      await once(false);
      for (let i = 0; i < repeat; i++) await once(true);
      const base = summary(cases.bare!);
      const noneHalf = summary(cases['none½']!);
      console.log(
        'case     sender CPU-s/GiB (×bare)   receiver CPU-s/GiB (×bare)   MB/s   wire/data   sender per round / receiver per round',
      );
      for (const [name, runs] of Object.entries(cases)) {
        const s = summary(runs);
        const versus =
          name === 'auto½'
            ? `; ×none½: sender ${(s.sender / noneHalf.sender).toFixed(2)}, receiver ${(s.receiver / noneHalf.receiver).toFixed(2)}`
            : '';
        console.log(
          `${name.padEnd(8)} ${s.sender.toFixed(3)} (${(s.sender / base.sender).toFixed(2)})`.padEnd(36) +
            `${s.receiver.toFixed(3)} (${(s.receiver / base.receiver).toFixed(2)})`.padEnd(29) +
            `${s.mbs.toFixed(0).padStart(5)}   ${s.wire.toFixed(3)}       ${s.spread((m) => m.sender)} / ${s.spread((m) => m.receiver)}${versus}`,
        );
      }
    }
    if (only.includes('wan')) {
      const wanBlocks = half.slice(0, Math.ceil(wanSize / BLOCK));
      const linkProcess = child('link', { BENCH_TARGET: String(agentPort) });
      const { port } = await linkProcess.next<{ port: number }>();
      try {
        const results: string[] = [];
        for (const codec of ['none', 'auto']) {
          const before = (await linkProcess.ask<{ up: number }>({ cmd: 'delivered' })).up;
          const m = await sessionRun(port, security, codec, wanBlocks, replica, peer);
          const crossed = (await linkProcess.ask<{ up: number }>({ cmd: 'delivered' })).up - before;
          results.push(
            `${`${codec}½`.padEnd(6)} ${formatBytes(m.raw)} in ${m.seconds.toFixed(1)} s: ${formatBytes(crossed)} crossed the link (${(crossed / m.raw).toFixed(3)} of the data); sender ${((m.sender / m.raw) * GiB).toFixed(3)}, receiver ${((m.receiver / m.raw) * GiB).toFixed(3)} CPU-s/GiB`,
          );
        }
        console.log('\nthrough the link emulator, 100 Mbit/s, 10 ms RTT:');
        for (const line of results) console.log(line);
      } finally {
        linkProcess.proc.send({ cmd: 'exit' });
      }
    }
  } finally {
    peer.proc.send({ cmd: 'exit' });
  }
}

if (process.argv.includes('--receiver')) await receiver();
if (process.argv.includes('--link')) await link();
