// The agent under a flood of connections that never authenticate (issue 11, defect 4). Starts the
// real `replikit-agent` (TLS-PSK) as a child process limited to 256 descriptors (`prlimit`),
// replicates a VM through it once undisturbed, then floods it with silent TLS clients and
// slow-loris ones (a TLS record header, then one byte every few seconds) from 200 addresses of
// 127.0.0.0/8, each reopened a second after the agent drops it, and replicates again through the
// flood. Prints the run times, the agent's descriptors and memory (sampled from /proc), how many
// attackers were dropped, and how long the longest attacker stayed connected (the handshake
// deadline bounds it). Linux only.
// Flags: --size=128MiB --silent=2000 --slow=200 --trickle=3000 --deadline=10
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash, randomBytes, randomFillSync } from 'node:crypto';
import { mkdir, mkdtemp, open, readdir, readFile, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';
import {
  type DiskRef,
  DriverRegistry,
  FileStateStore,
  formatBytes,
  type Hypervisor,
  parseSize,
  ReplicationEngine,
} from '@replikit/core';
import { createFileDriver, createFileVM, fileDriver } from '@replikit/driver-file';
import { createNetworkTransport, type Security } from '@replikit/transport';
import { startFlood } from '../packages/transport/test/helpers/flood.js';

const here = dirname(fileURLToPath(import.meta.url));
const agentBin = join(here, '..', 'packages', 'cli', 'src', 'agent-bin.ts');
const tsxLoader = pathToFileURL(
  join(dirname(createRequire(import.meta.url).resolve('tsx/package.json')), 'dist', 'loader.mjs'),
).href;

function flag(flags: string[], name: string, fallback: string): string {
  return flags.find((f) => f.startsWith(`--${name}=`))?.split('=')[1] ?? fallback;
}

/** A VM disk of `size` bytes: 4 MiB stripes of zeros, text and random bytes. */
async function makeVm(root: string, name: string, size: number): Promise<void> {
  await createFileVM(root, { name, disks: [{ id: 'd0', size }] });
  const handle = await open(join(root, name, 'd0.raw'), 'r+');
  const stripe = Buffer.alloc(4 * 1024 * 1024);
  try {
    for (let offset = 0, i = 0; offset < size; offset += stripe.length, i++) {
      if (i % 3 === 0) continue;
      if (i % 3 === 1) stripe.fill(`line ${i} status=200 GET /index.html\n`);
      else randomFillSync(stripe);
      await handle.write(stripe, 0, Math.min(stripe.length, size - offset), offset);
    }
  } finally {
    await handle.close();
  }
}

async function digestOf(hypervisor: Hypervisor, disk: DiskRef): Promise<string> {
  const reader = await hypervisor.openReader(disk);
  try {
    const hash = createHash('sha256');
    for (let offset = 0; offset < reader.size; offset += 1 << 22) {
      hash.update(await reader.read(offset, Math.min(1 << 22, reader.size - offset)));
    }
    return hash.digest('hex');
  } finally {
    await reader.close();
  }
}

/** Samples a process's open descriptors and resident memory from /proc until stopped. */
function sampleProcess(pid: number) {
  const peak = { fds: 0, rssKiB: 0 };
  const last = { fds: 0, rssKiB: 0 };
  let stopped = false;
  const once = async () => {
    try {
      last.fds = (await readdir(`/proc/${pid}/fd`)).length;
      const status = await readFile(`/proc/${pid}/status`, 'utf8');
      last.rssKiB = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
      peak.fds = Math.max(peak.fds, last.fds);
      peak.rssKiB = Math.max(peak.rssKiB, last.rssKiB);
    } catch {
      // The process is gone.
    }
  };
  const loop = (async () => {
    while (!stopped) {
      await once();
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  })();
  return {
    peak,
    last,
    /** Resets the peak to the current values (a new phase starts). */
    async reset() {
      await once();
      peak.fds = last.fds;
      peak.rssKiB = last.rssKiB;
    },
    async stop() {
      stopped = true;
      await loop;
    },
  };
}

function startAgent(root: string, key: Buffer, deadlineSeconds: number) {
  const child: ChildProcess = spawn(
    'prlimit',
    [
      '--nofile=256:256',
      process.execPath,
      '--conditions=@replikit/source',
      '--import',
      tsxLoader,
      agentBin,
      '--root',
      root,
      '--listen',
      '127.0.0.1:0',
      '--psk-identity',
      'bench',
      '--handshake-timeout',
      String(deadlineSeconds),
    ],
    { env: { ...process.env, REPLIKIT_AGENT_PSK: key.toString('hex'), NODE_OPTIONS: '' }, stdio: 'pipe' },
  );
  const lines: string[] = [];
  let pending = '';
  child.stdout!.on('data', (chunk: Buffer) => {
    pending += chunk.toString();
    const parts = pending.split('\n');
    pending = parts.pop()!;
    lines.push(...parts);
  });
  child.stderr!.on('data', (chunk: Buffer) => process.stderr.write(chunk));
  const listening = new Promise<number>((resolve, reject) => {
    const check = () => {
      const match = lines.map((line) => /listening on 127\.0\.0\.1:(\d+)/.exec(line)).find(Boolean);
      if (match) resolve(Number(match[1]));
    };
    child.stdout!.on('data', check);
    child.once('close', (code) => reject(new Error(`the agent exited (${code}) before it listened`)));
  });
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  return { child, lines, listening, exited };
}

export async function run(flags: string[]): Promise<void> {
  if (process.platform !== 'linux') {
    console.log('skipped: needs Linux (/proc, prlimit, 127.0.0.0/8 on loopback)');
    return;
  }
  const size = parseSize(flag(flags, 'size', '128MiB'), '--size');
  const silent = Number(flag(flags, 'silent', '2000'));
  const slow = Number(flag(flags, 'slow', '200'));
  const trickleMs = Number(flag(flags, 'trickle', '3000'));
  const deadline = Number(flag(flags, 'deadline', '10'));
  const dir = await mkdtemp(join(tmpdir(), 'replikit-bench-flood-'));
  const vms = join(dir, 'vms');
  const replicas = join(dir, 'replicas');
  await mkdir(vms);
  await mkdir(replicas);
  const key = randomBytes(32);
  const security: Security = { kind: 'tls', psk: { identity: 'bench', key } };
  const agent = startAgent(replicas, key, deadline);
  try {
    const port = await agent.listening;
    const pid = agent.child.pid!;
    const address = { host: '127.0.0.1', port };
    const registry = new DriverRegistry().register(fileDriver);
    const engine = new ReplicationEngine({
      stateStore: new FileStateStore(join(dir, 'state')),
      drivers: registry,
      transport: () => createNetworkTransport({ address, security }),
      checkpointEveryMs: 0,
    });
    const replicate = async (vm: string) => {
      await makeVm(vms, vm, size);
      const started = performance.now();
      const record = await engine.run({
        name: `flood-${vm}`,
        source: { driver: 'file', root: vms, vm },
        target: { driver: 'file', root: replicas, replicaName: `${vm}-replica` },
        method: 'qhybrid',
      });
      const seconds = (performance.now() - started) / 1000;
      const source = createFileDriver({ root: vms });
      const target = createFileDriver({ root: replicas });
      const same =
        (await digestOf(source, record.snapshot!.disks[0]!)) === (await digestOf(target, record.replica!.disks[0]!));
      await source.close();
      await target.close();
      return { state: record.state, seconds, same };
    };

    const sampler = sampleProcess(pid);
    await sampler.reset();
    const idle = { ...sampler.last };
    const calm = await replicate('calm');
    const calmPeak = { ...sampler.peak };
    console.log(
      `undisturbed run: ${calm.state}, ${formatBytes(size)} in ${calm.seconds.toFixed(1)} s, replica ${calm.same ? 'equals' : 'DIFFERS FROM'} the source; ` +
        `agent: ${idle.fds} descriptors idle, ${calmPeak.fds} at most; RSS ${(idle.rssKiB / 1024).toFixed(0)} MiB idle, ${(calmPeak.rssKiB / 1024).toFixed(0)} MiB at most`,
    );

    await sampler.reset();
    const from = Array.from({ length: 200 }, (_, i) => `127.0.${1 + Math.floor(i / 250)}.${(i % 250) + 1}`);
    const flood = startFlood({ target: address, silent, slowLoris: slow, trickleMs, from, reopenMs: 1000 });
    const floodStart = performance.now();
    // The flood is at full strength once every first connection was opened and the agent has
    // had to drop some: wait for that, then replicate through it.
    // (An agent without limits never drops any: then the run starts after 20 s of flood.)
    const fullBy = performance.now() + 20_000;
    while (flood.closedByAgent < silent / 2 && performance.now() < fullBy) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const stormy = await replicate('stormy');
    const stormPeak = { ...sampler.peak };
    const stopAt = performance.now();
    const given = 3 * deadline * 1000;
    await Promise.race([flood.stop(), new Promise((resolve) => setTimeout(resolve, given))]);
    const drained = (performance.now() - stopAt) / 1000;
    const left = flood.live;
    const floodSeconds = (stopAt - floodStart) / 1000;
    await sampler.reset();
    const after = { ...sampler.last };
    await sampler.stop();
    const dropLines = agent.lines.filter((line) => /^\S+ dropped/.test(line)).length;
    console.log(
      `under ${silent} silent TLS + ${slow} slow-loris connections (one byte every ${trickleMs / 1000} s, from ${from.length} addresses, each reopened 1 s after its drop): ` +
        `${stormy.state}, ${formatBytes(size)} in ${stormy.seconds.toFixed(1)} s, replica ${stormy.same ? 'equals' : 'DIFFERS FROM'} the source`,
    );
    console.log(
      `agent (prlimit --nofile=256): ${stormPeak.fds} descriptors at most, RSS ${(stormPeak.rssKiB / 1024).toFixed(0)} MiB at most; ` +
        `once the attackers were gone: ${after.fds} descriptors, RSS ${(after.rssKiB / 1024).toFixed(0)} MiB`,
    );
    console.log(
      `attackers: ${flood.connected} connections established in ${floodSeconds.toFixed(1)} s (${flood.neverConnected} more attempts not accepted), ${flood.closedByAgent} dropped by the agent; ` +
        `while it went on the longest stayed ${(flood.longestLifeMs / 1000).toFixed(1)} s (deadline ${deadline} s, counted from the agent's accept); ${left === 0 ? `the last ones were gone ${drained.toFixed(1)} s after the flood stopped reopening` : `${left} STILL CONNECTED ${drained.toFixed(0)} s after the flood stopped reopening`}`,
    );
    console.log(`agent log: ${dropLines} lines about drops for ${flood.closedByAgent} dropped connections`);
    flood.destroy();
  } finally {
    agent.child.kill('SIGTERM');
    await agent.exited;
    await rm(dir, { recursive: true, force: true });
  }
}
