// Transport throughput, per issue 5. Two Node processes on loopback: this one is the source, a
// forked peer is the target. The peer either sinks bytes from a bare TCP or TLS socket (the
// wire's limit, no protocol), or does the same and writes what it receives into a new file with
// `writev` (the least any receiver that keeps the bytes must do: what the session costs beyond
// it is the protocol's), or runs a replikit agent that decodes frames, checks each block's
// digest (xxh128 on the dedup package's worker pool, as `replikit run` and `replikit-agent`
// do) and writes it into a file (page cache; also measured with an fdatasync at every ack,
// the durable mode the protocol's acks promise, bound by the disk). Every run moves the
// same demo-like mix (4 MiB stripes: 40 % zero, 30 % text, 30 % random), with the block digests
// computed beforehand (hashing is the engine's work, not the transport's). Each kind starts with an
// untimed round (the agent is long-running: its first session starts threads and compiles its hot
// path); then `--repeat` timed rounds, interleaved, and the medians.
// Flags: --size=256MiB --repeat=3 --only=tls,tcp,codecs
import { fork } from 'node:child_process';
import { randomBytes, randomFillSync } from 'node:crypto';
import { closeSync, openSync, unlinkSync, writeSync, writevSync } from 'node:fs';
import { mkdtemp, open, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import type { BlockHasher, DiskWriter, Hypervisor, Replica } from '@replikit/core';
import { formatBytes, parseSize } from '@replikit/core';
import { createHashingPool } from '@replikit/dedup';
import {
  availableCodecs,
  codecByName,
  createAgent,
  createNetworkTransport,
  DEFAULT_CODEC,
  maybeCompress,
  type Security,
} from '@replikit/transport';

const BLOCK = 64 * 1024;
/** The file driver's switch (`REPLIKIT_FILE_IO=threadpool` writes through libuv's pool). */
const SYNC_IO = process.env.REPLIKIT_FILE_IO !== 'threadpool';
const STRIPE = 4 * 1024 * 1024;
const here = fileURLToPath(import.meta.url);

interface Block {
  index: number;
  data: Uint8Array;
  digest: Uint8Array;
}

function flag(flags: string[], name: string, fallback: string): string {
  return flags.find((f) => f.startsWith(`--${name}=`))?.split('=')[1] ?? fallback;
}

function textStripe(seed: number): Buffer {
  const lines: string[] = [];
  let length = 0;
  for (let i = 0; length < STRIPE; i++) {
    const line = `2026-11-25T03:${String(i % 60).padStart(2, '0')}:00Z host=vm${seed} unit=app[${1000 + (i % 17)}] request=${i} status=${i % 13 ? 200 : 404} bytes=${(i * 7919) % 65536}\n`;
    lines.push(line);
    length += line.length;
  }
  return Buffer.from(lines.join('')).subarray(0, STRIPE);
}

/** The demo-like mix: returns the non-zero blocks (zero stripes become zero runs). */
async function makeMix(
  size: number,
  hasher: BlockHasher,
): Promise<{ blocks: Block[]; compressible: Block[]; blockCount: number }> {
  const blocks: Block[] = [];
  const compressible: Block[] = [];
  for (let offset = 0, stripe = 0; offset < size; offset += STRIPE, stripe++) {
    const kind = (stripe * 7) % 10; // 0-3 zero, 4-6 text, 7-9 random
    if (kind < 4) continue;
    const data = kind < 7 ? textStripe(stripe) : randomFillSync(Buffer.allocUnsafe(STRIPE));
    for (let at = 0; at < STRIPE; at += BLOCK) {
      const chunk = new Uint8Array(data.buffer, data.byteOffset + at, BLOCK);
      const [digest] = await hasher.hash([chunk]);
      const block = { index: (offset + at) / BLOCK, data: chunk, digest: new Uint8Array(digest!) };
      blocks.push(block);
      if (kind < 7) compressible.push(block);
    }
  }
  return { blocks, compressible, blockCount: size / BLOCK };
}

// ── the peer process ──────────────────────────────────────────────────────────────────────────

/**
 * A hypervisor whose only replica disk is a plain file (what the agent needs to write): a new,
 * empty file for each session, whose path goes into `files`. The peer deletes the files of
 * earlier sessions before it answers for the next one, outside the timed part: reopening one file
 * with `w+` made every session first truncate the previous session's 152 MiB of page cache
 * (20–50 ms inside the timed part), which no agent does (the file driver opens its images `r+`).
 */
function fileSink(name: string, durable: boolean, files: string[]): Hypervisor {
  let opened = 0;
  return {
    async openWriter(_replica: Replica, disk: { size: number }): Promise<DiskWriter> {
      const path = `${name}-${opened++}.raw`;
      files.push(path);
      const handle = await open(path, 'w+');
      await handle.truncate(disk.size);
      return {
        size: disk.size,
        async write(offset: number, data: Uint8Array) {
          // As the file driver writes (packages/driver-file/src/block-io.ts, SYNC_IO): positional
          // writes into the page cache run on the calling thread, not through libuv's pool.
          if (SYNC_IO) {
            for (let done = 0; done < data.length; )
              done += writeSync(handle.fd, data, done, data.length - done, offset + done);
          } else await handle.write(data, 0, data.length, offset);
        },
        async writeZeroes() {
          // A fresh sparse file already reads as zero.
        },
        flush: () => (durable ? handle.datasync() : Promise.resolve()),
        close: () => handle.close(),
      };
    },
  } as unknown as Hypervisor;
}

/**
 * The least any receiver that keeps the bytes must do: gather what the socket delivers (no
 * copy) and write each 4 MiB of it into a new file with one synchronous positional `writev`,
 * as the agent's sink writes; no framing, no digest, no copy into a buffer of its own.
 */
function bareFileSink(path: string): { take(chunk: Buffer): void; end(): void } {
  const fd = openSync(path, 'w+');
  let gathered: Buffer[] = [];
  let bytes = 0;
  let position = 0;
  const flush = () => {
    for (let done = 0; done < bytes; ) {
      const n = writevSync(fd, gathered, position + done);
      done += n;
      if (done < bytes) gathered = [Buffer.concat(gathered).subarray(n)];
    }
    position += bytes;
    gathered = [];
    bytes = 0;
  };
  return {
    take(chunk) {
      gathered.push(chunk);
      bytes += chunk.length;
      if (bytes >= STRIPE) flush();
    },
    end() {
      flush();
      closeSync(fd);
      // Deleted at once (after the timed part): the next measurement starts as it did before this
      // baseline existed. On the development VM, memory freed just before a run makes that run's
      // own allocations cheaper (freed guest memory goes back to the host within a second, and
      // taking it again costs a host fault per page), so when files are deleted matters.
      unlinkSync(path);
    },
  };
}

async function peer(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'replikit-bench-peer-'));
  const send = (message: unknown) => process.send!(message);
  const agents = new Map<string, number>();
  const files: string[] = [];
  process.on(
    'message',
    async (message: {
      cmd: string;
      kind?: 'tcp' | 'tls';
      bytes?: number;
      security?: unknown;
      durable?: boolean;
      toFile?: boolean;
    }) => {
      if (message.cmd === 'bare') {
        const psk = Buffer.from(process.env.BENCH_PSK!, 'hex');
        const sink = message.toFile ? bareFileSink(join(dir, `bare-${Date.now()}.raw`)) : undefined;
        let seen = 0;
        const onSocket = (socket: net.Socket) => {
          socket.on('data', (chunk: Buffer) => {
            seen += chunk.length;
            sink?.take(chunk);
            if (seen >= message.bytes!) {
              sink?.end();
              socket.end('k');
            }
          });
        };
        const server =
          message.kind === 'tls'
            ? tls.createServer(
                { pskCallback: () => psk, ciphers: 'TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384' },
                onSocket,
              )
            : net.createServer(onSocket);
        server.listen(0, '127.0.0.1', () => send({ port: (server.address() as net.AddressInfo).port }));
        server.unref();
      } else if (message.cmd === 'agent') {
        // The files of earlier sessions go before the next one starts (see fileSink).
        for (const file of files.splice(0)) await rm(file, { force: true });
        // One long-running agent per security kind and write mode, as in production: its
        // hashing threads and compiled code are warm after the first session.
        const security = revive(message.security as Security);
        const key = `${security.kind}:${message.durable === true}`;
        let port = agents.get(key);
        if (port === undefined) {
          const agent = createAgent({
            target: fileSink(join(dir, `replica-${agents.size}`), message.durable === true, files),
            security,
            hasher: (algorithm) => createHashingPool({ algorithm }),
          });
          port = (await agent.listen({ host: '127.0.0.1', port: 0 })).port;
          agents.set(key, port);
        }
        send({ port });
      } else if (message.cmd === 'exit') {
        await rm(dir, { recursive: true, force: true });
        process.exit(0);
      }
    },
  );
  send({ ready: true });
}

/** Keys travel over IPC as plain objects; make them bytes again. */
function revive(security: Security): Security {
  const bytes = (v: unknown) => new Uint8Array(Buffer.from((v as { data: number[] }).data ?? (v as number[])));
  if (security.kind === 'tcp') return { kind: 'tcp', ...(security.key ? { key: bytes(security.key) } : {}) };
  return { kind: 'tls', psk: { identity: security.psk!.identity, key: bytes(security.psk!.key) } };
}

// ── the source side ───────────────────────────────────────────────────────────────────────────

function startPeer(psk: Buffer) {
  const child = fork(here, ['--peer'], {
    execArgv: [
      '--conditions=@replikit/source',
      '--import',
      'tsx',
      ...(process.env.BENCH_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_PROF}`] : []),
    ],
    env: { ...process.env, BENCH_PSK: psk.toString('hex') },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const next = () =>
    new Promise<{ port: number; ready?: boolean }>((resolve) => child.once('message', (m) => resolve(m as never)));
  const ask = (message: unknown) => {
    const answer = next();
    child.send(message as never);
    return answer;
  };
  return { child, next, ask };
}

async function bare(
  peerProcess: ReturnType<typeof startPeer>,
  kind: 'tcp' | 'tls',
  blocks: Block[],
  psk: Buffer,
  toFile = false,
): Promise<number> {
  const bytes = blocks.length * BLOCK;
  const { port } = await peerProcess.ask({ cmd: 'bare', kind, bytes, toFile });
  const start = performance.now();
  const socket: net.Socket =
    kind === 'tls'
      ? tls.connect({
          port,
          host: '127.0.0.1',
          pskCallback: () => ({ psk, identity: 'bench' }),
          ciphers: 'TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384',
          checkServerIdentity: () => undefined,
        })
      : net.connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => {
    socket.once(kind === 'tls' ? 'secureConnect' : 'connect', () => resolve());
    socket.once('error', reject);
  });
  const done = new Promise<void>((resolve) => socket.once('data', () => resolve()));
  for (const block of blocks) {
    if (!socket.write(block.data)) await new Promise((resolve) => socket.once('drain', resolve));
  }
  await done;
  socket.destroy();
  return Math.round(bytes / ((performance.now() - start) / 1000));
}

async function session(
  peerProcess: ReturnType<typeof startPeer>,
  security: Security,
  codec: string,
  blocks: Block[],
  blockCount: number,
  durable = false,
): Promise<{ rate: number; wire: number; raw: number }> {
  const { port } = await peerProcess.ask({ cmd: 'agent', security, durable });
  const transport = createNetworkTransport({ address: { host: '127.0.0.1', port }, security, codec });
  const disk = { id: 'd0', vmId: 'replica', size: blockCount * BLOCK };
  const replica = { id: 'replica', name: 'replica', disks: [disk], created: true } as unknown as Replica;
  const start = performance.now();
  const channel = await transport.open({ runId: 'bench', replica, blockSize: BLOCK, digest: 'xxh128' });
  const stream = await channel.openDisk(disk);
  let next = 0;
  for (const block of blocks) {
    if (block.index > next) await stream.send({ kind: 'zero', index: next, count: block.index - next });
    await stream.send({ kind: 'data', index: block.index, data: block.data, digest: block.digest });
    next = block.index + 1;
  }
  await stream.checkpoint();
  const wire = stream.bytesSent;
  await stream.close();
  await channel.close();
  const raw = blocks.length * BLOCK;
  return { rate: Math.round(raw / ((performance.now() - start) / 1000)), wire, raw };
}

const mbs = (bytesPerSecond: number) => `${(bytesPerSecond / 1e6).toFixed(0)} MB/s`;

/** Compression alone on one core, no wire: what each codec costs. */
function codecSpeed(name: string, blocks: Block[]): { rate: number; ratio: number } {
  const codec = codecByName(name);
  let out = 0;
  const start = performance.now();
  for (const block of blocks) out += maybeCompress(codec, block.data)?.length ?? block.data.length;
  const seconds = (performance.now() - start) / 1000;
  return { rate: (blocks.length * BLOCK) / seconds, ratio: out / (blocks.length * BLOCK) };
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

export async function run(flags: string[]): Promise<void> {
  const size = parseSize(flag(flags, 'size', '256MiB'), '--size');
  const repeat = Math.max(1, Number(flag(flags, 'repeat', '3')));
  const only = flag(flags, 'only', 'tcp,tls,codecs').split(',');
  const hasher = await createHashingPool({ algorithm: 'xxh128' });
  const { blocks, compressible, blockCount } = await makeMix(Math.ceil(size / STRIPE) * STRIPE, hasher);
  await hasher.close?.();
  const psk = randomBytes(32);
  const tlsSecurity: Security = { kind: 'tls', psk: { identity: 'bench', key: psk } };
  const tcpSecurity: Security = { kind: 'tcp', key: psk };
  console.log(
    `data: ${formatBytes(blockCount * BLOCK)} virtual, ${formatBytes(blocks.length * BLOCK)} non-zero (${formatBytes(compressible.length * BLOCK)} compressible); codecs here: ${availableCodecs().join(', ')} (no zstd in Node ${process.versions.node}); ${repeat} runs each, interleaved, median shown (best in brackets)`,
  );
  const peerProcess = startPeer(psk);
  await peerProcess.next();
  try {
    for (const kind of ['tcp', 'tls'] as const) {
      if (!only.includes(kind)) continue;
      const wire: number[] = [];
      const wireToFile: number[] = [];
      const sessions: number[] = [];
      const durable: number[] = [];
      const security = kind === 'tls' ? tlsSecurity : tcpSecurity;
      // replikit-agent is a long-running program: its first session starts its threads and has
      // its hot path compiled. One untimed round first (bare socket and sessions alike), as a
      // benchmark of any JIT-compiled server does; its numbers are printed, not counted.
      const cold = {
        wire: await bare(peerProcess, kind, blocks, psk),
        wireToFile: await bare(peerProcess, kind, blocks, psk, true),
        session: (await session(peerProcess, security, 'none', blocks, blockCount)).rate,
      };
      await session(peerProcess, security, 'none', blocks, blockCount, true);
      for (let i = 0; i < repeat; i++) {
        wire.push(await bare(peerProcess, kind, blocks, psk));
        wireToFile.push(await bare(peerProcess, kind, blocks, psk, true));
        sessions.push((await session(peerProcess, security, 'none', blocks, blockCount)).rate);
        durable.push((await session(peerProcess, security, 'none', blocks, blockCount, true)).rate);
      }
      const ratio = (values: number[], base = wire) =>
        `${((median(values) / median(base)) * 100).toFixed(0)} % (pairwise ${values.map((v, i) => `${((v / base[i]!) * 100).toFixed(0)}`).join('/')} %)`;
      console.log(
        `${kind.padEnd(4)} bare socket ${mbs(median(wire))} [${mbs(Math.max(...wire))}]; session, codec none, written to a file ${mbs(median(sessions))} [${mbs(Math.max(...sessions))}] = ${ratio(sessions)} of the bare socket; with fdatasync at each ack ${mbs(median(durable))} = ${ratio(durable)}` +
          `; untimed first round: session ${mbs(cold.session)} against bare ${mbs(cold.wire)} (${((cold.session / cold.wire) * 100).toFixed(0)} %)`,
      );
      console.log(
        `${''.padEnd(4)} bare socket whose receiver writes the bytes into a new file ${mbs(median(wireToFile))} [${mbs(Math.max(...wireToFile))}] = ${ratio(wireToFile)} of the bare socket; ` +
          `the session is ${ratio(sessions, wireToFile)} of it (untimed first round: ${mbs(cold.wireToFile)})`,
      );
    }
    if (only.includes('codecs')) {
      console.log(
        '\ncodec        alone, 1 core (ratio)        session over TLS: compressible part (wire/data)   whole mix (wire/data)',
      );
      for (const name of availableCodecs()) {
        const alone = name === 'none' ? undefined : codecSpeed(name, compressible);
        const text: Array<{ rate: number; wire: number; raw: number }> = [];
        for (let i = 0; i < repeat; i++)
          text.push(await session(peerProcess, tlsSecurity, name, compressible, blockCount));
        const mix = await session(peerProcess, tlsSecurity, name, blocks, blockCount);
        const rates = text.map((t) => t.rate);
        const aloneText = alone ? `${mbs(alone.rate)} (${alone.ratio.toFixed(3)})` : '-';
        const textPart = `${mbs(median(rates)).padStart(9)} [${mbs(Math.max(...rates))}] (${(text[0]!.wire / text[0]!.raw).toFixed(3)})`;
        const mixPart = `${mbs(mix.rate).padStart(9)} (${(mix.wire / mix.raw).toFixed(3)})`;
        console.log(`${name.padEnd(12)} ${aloneText.padEnd(27)} ${textPart.padEnd(50)} ${mixPart}`);
      }
      console.log(`default codec: ${DEFAULT_CODEC}`);
    }
  } finally {
    peerProcess.child.send({ cmd: 'exit' });
  }
}

if (process.argv.includes('--peer')) await peer();
