// Incremental replication against rsync, per issue 4: a raw image (2 GiB by default, about 60 %
// allocated with compressible and random data) is replicated once; then 1 % of its 64 KiB blocks
// get a 4 KiB guest write (through the file driver, which tracks changed blocks like Xen CBT). On
// copies of the same pair, `rsync --inplace --no-whole-file` and replikit's incremental run
// (tracked blocks compared with the trusted replication cache) are timed, with the bytes each sends.
// Also: the engine's full scan (a source without change tracking: every allocated block read,
// hashed and compared with the cache) against `cat image >/dev/null`, with a warm page cache and,
// when this process may drop the page cache (root), a cold one (medians of three interleaved tries
// each, with the disk's busy time and read requests in each try beside its wall time); and peak memory.
// The bytes a run puts on a network are measured on a second replica kept over a loopback TCP
// session to an agent (network transport, same cache settings): a local run copies changed
// blocks whole (nothing crosses a network, and it reads each once), a network run sends deltas.
// Flags: --size=2GiB --allocated=0.6 --changed=0.01 --threads=N --skip-rsync --skip-network
import { execFileSync, spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  DriverRegistry,
  defineDriver,
  FileStateStore,
  formatBytes,
  type Hypervisor,
  InputError,
  parseSize,
  ReplicationEngine,
  type RunRecord,
} from '@replikit/core';
import { createHashingPool, FileCacheProvider } from '@replikit/dedup';
import { createFileDriver, createFileVM, fileDriver, openGuestDisk } from '@replikit/driver-file';
import { createAgent, createNetworkTransport, localTransport } from '@replikit/transport';

const BLOCK = 64 * 1024;
/** Tries of each full-scan measurement (interleaved with `cat`), of which the medians are shown. */
const TRIES = 3;

function flag(flags: string[], name: string, fallback: string): string {
  return flags.find((f) => f.startsWith(`--${name}=`))?.split('=')[1] ?? fallback;
}

function fraction(flags: string[], name: string, fallback: string): number {
  const value = Number(flag(flags, name, fallback));
  if (!(value >= 0 && value <= 1)) throw new InputError(`--${name} must be a fraction from 0 to 1`);
  return value;
}

/** (Also used by single-pass.bench.ts.) Fills 4 MiB stripes: a share `allocated` of them hold data (half text, half random), the rest stay holes. */
/** Fills `allocated` of the image with 4 MiB stripes: half one text stripe repeated, half random (all random with `unique`). */
export async function fillImage(path: string, size: number, allocated: number, unique = false): Promise<void> {
  const handle = await open(path, 'r+');
  const stripe = 4 * 1024 * 1024;
  const text = Buffer.from('INFO request served in 12ms path=/api/v1/items status=200\n'.repeat(80000)).subarray(
    0,
    stripe,
  );
  const noise = Buffer.allocUnsafe(stripe);
  try {
    for (let offset = 0, i = 0; offset < size; offset += stripe, i++) {
      const u = ((i * 37) % 100) / 100;
      if (u >= allocated) continue;
      const data = !unique && u < allocated / 2 ? text : randomFillSync(noise);
      await handle.write(data, 0, Math.min(stripe, size - offset), offset);
    }
  } finally {
    await handle.close();
  }
}

/** 4 KiB guest writes, through the driver (so its change tracking sees them), into a share of the blocks. */
export async function guestWrites(root: string, size: number, share: number): Promise<number> {
  const page = Buffer.allocUnsafe(4096);
  let changed = 0;
  const disk = await openGuestDisk(root, 'bench', 'disk');
  try {
    for (let block = 0; block < Math.floor(size / BLOCK); block++) {
      if ((block * 2654435761) % 1000 >= share * 1000) continue;
      await disk.write(block * BLOCK + ((block * 7) % 16) * 4096, randomFillSync(page));
      changed++;
    }
  } finally {
    await disk.close();
  }
  return changed;
}

/** The same driver, without its change tracker: what a source without CBT looks like. */
function withoutTracking(driver: Hypervisor): Hypervisor {
  const capabilities = { ...driver.capabilities, changeTracking: false };
  return new Proxy(driver, {
    get(target, property) {
      if (property === 'changeTracker') return undefined;
      if (property === 'capabilities') return capabilities;
      const value = Reflect.get(target, property, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

/** Drops the page cache (root only); false when this process may not. */
function dropCaches(): boolean {
  try {
    execFileSync('sync');
    writeFileSync('/proc/sys/vm/drop_caches', '3');
    return true;
  } catch {
    return false;
  }
}

/** What /proc/diskstats counts for a disk: ms with I/O in flight, read requests, bytes read. */
interface DiskCounters {
  busyMs: number;
  reads: number;
  readBytes: number;
}

/**
 * The counters of the disk that holds `path`, or undefined where they cannot be read. A cold try
 * whose wall time is far above its busy time spent the rest elsewhere: on this development VM,
 * mostly faulting in the new page-cache pages (the host takes freed guest memory back at once, so
 * every page that `drop_caches` freed costs a host fault when it is used again).
 */
function diskCounters(path: string): DiskCounters | undefined {
  try {
    const dev = statSync(path).dev;
    const major = (dev >> 8) & 0xfff;
    const minor = (dev & 0xff) | ((dev >> 12) & 0xfff00);
    const fields = readFileSync('/proc/diskstats', 'utf8')
      .split('\n')
      .map((l) => l.trim().split(/\s+/))
      .find((f) => Number(f[0]) === major && Number(f[1]) === minor);
    return fields
      ? { busyMs: Number(fields[12]), reads: Number(fields[3]), readBytes: Number(fields[5]) * 512 }
      : undefined;
  } catch {
    return undefined;
  }
}

/** `after - before` as "busy X of W ms, N reads of M KiB on average". */
function describeIo(before: DiskCounters | undefined, after: DiskCounters | undefined, wallMs: number): string {
  if (!before || !after) return `${Math.round(wallMs)} ms`;
  const reads = after.reads - before.reads;
  const average = reads > 0 ? (after.readBytes - before.readBytes) / reads / 1024 : 0;
  return `busy ${after.busyMs - before.busyMs} of ${Math.round(wallMs)} ms, ${reads} reads of ${average.toFixed(0)} KiB on average`;
}

function stateSeconds(record: RunRecord, from: string, to: string): number {
  const at = (state: string) => Date.parse(record.history.find((h) => h.state === state)!.at);
  return (at(to) - at(from)) / 1000;
}

function seconds(start: bigint): number {
  return Number(process.hrtime.bigint() - start) / 1e9;
}

export async function run(flags: string[]): Promise<void> {
  const size = parseSize(flag(flags, 'size', '2GiB'), '--size');
  const allocated = fraction(flags, 'allocated', '0.6');
  const share = fraction(flags, 'changed', '0.01');
  const threads = Number(flag(flags, 'threads', '0')) || undefined;
  const skipRsync = flags.includes('--skip-rsync');
  const skipNetwork = flags.includes('--skip-network');
  const dir = await mkdtemp(join(tmpdir(), 'replikit-bench-dedup-'));
  try {
    const vms = join(dir, 'vms');
    const replicas = join(dir, 'replicas');
    await createFileVM(vms, { name: 'bench', disks: [{ id: 'disk', size }], changeTracking: true });
    const image = join(vms, 'bench', 'disk.raw');
    await fillImage(image, size, allocated);
    const engineFor = (hideTracking: boolean) =>
      new ReplicationEngine({
        transport: localTransport(),
        stateStore: new FileStateStore(join(dir, 'state')),
        drivers: new DriverRegistry().register(
          defineDriver({
            ...fileDriver,
            create: async (options, context) => {
              const driver = await fileDriver.create(options, context);
              return hideTracking ? withoutTracking(driver) : driver;
            },
          }),
        ),
        digest: 'xxh128',
        hasher: (algorithm) => createHashingPool({ algorithm, ...(threads ? { threads } : {}) }),
        cache: new FileCacheProvider(join(dir, 'state', 'cache')),
        // A long-lived process (a scheduler) keeps its hashing threads between runs.
        keepHashers: true,
      });
    const engine = engineFor(false);
    const job = {
      name: 'bench',
      source: { driver: 'file', root: vms, vm: 'bench' },
      target: { driver: 'file', root: replicas },
      method: 'qhybrid',
      options: { replicationCache: true },
    };
    console.log(`image ${formatBytes(size)}, ${Math.round(allocated * 100)} % allocated; first (full) replication…`);
    await engine.run(job);

    // The same job over a loopback TCP session to an agent that keeps its own replica: what a
    // run puts on a network (plain TCP with a key: the bytes, not TLS, are measured here).
    const security = { kind: 'tcp' as const, key: randomFillSync(new Uint8Array(32)) };
    const agent = skipNetwork
      ? undefined
      : createAgent({
          target: createFileDriver({ root: join(dir, 'agent-replicas') }),
          security,
          hasher: (algorithm) => createHashingPool({ algorithm }),
        });
    const agentPort = agent ? (await agent.listen({ host: '127.0.0.1', port: 0 })).port : 0;
    const networkEngine = new ReplicationEngine({
      transport: () => createNetworkTransport({ address: { host: '127.0.0.1', port: agentPort }, security }),
      stateStore: new FileStateStore(join(dir, 'network-state')),
      drivers: new DriverRegistry().register(fileDriver),
      digest: 'xxh128',
      hasher: (algorithm) => createHashingPool({ algorithm, ...(threads ? { threads } : {}) }),
      cache: new FileCacheProvider(join(dir, 'network-state', 'cache')),
      keepHashers: true,
    });
    const networkJob = { ...job, name: 'bench-network', target: { driver: 'file', root: join(dir, 'agent-replicas') } };
    if (agent) await networkEngine.run(networkJob);

    // rsync's pair: copies of the source and of the replica as they are now.
    const rsyncSource = join(dir, 'rsync', 'source.raw');
    const rsyncTarget = join(dir, 'rsync', 'target.raw');
    if (!skipRsync) {
      await mkdir(join(dir, 'rsync'));
      execFileSync('cp', ['--sparse=always', image, rsyncTarget]);
    }
    const changed = await guestWrites(vms, size, share);
    if (!skipRsync) execFileSync('cp', ['--sparse=always', image, rsyncSource]);
    console.log(`guest wrote 4 KiB into ${changed} of ${Math.floor(size / BLOCK)} blocks (${share * 100} %)`);

    execFileSync('sync');
    let rsyncSeconds = Number.NaN;
    let rsyncBytes = Number.NaN;
    if (!skipRsync) {
      const start = process.hrtime.bigint();
      const rsync = spawnSync(
        'rsync',
        ['--inplace', '--no-whole-file', '--ignore-times', '--stats', rsyncSource, rsyncTarget],
        {
          encoding: 'utf8',
        },
      );
      rsyncSeconds = seconds(start);
      if (rsync.status !== 0) throw new Error(`rsync failed: ${rsync.stderr}`);
      const count = (what: string) =>
        Number(new RegExp(`Total bytes ${what}: ([\\d,]+)`).exec(rsync.stdout)?.[1]?.replace(/,/g, '') ?? Number.NaN);
      rsyncBytes = count('sent') + count('received');
      await rm(join(dir, 'rsync'), { recursive: true, force: true });
    }

    const start = process.hrtime.bigint();
    const incremental = await engine.run(job);
    const replikitSeconds = seconds(start);
    const overNetwork = agent ? await networkEngine.run(networkJob) : undefined;
    await networkEngine.close();
    await agent?.stop();
    const mode = incremental.disks.map((d) => (d.digestSource ? `${d.mode}+${d.digestSource}` : d.mode)).join(', ');

    // The full scan: a source that cannot track changes makes the engine read and hash every
    // allocated block (holes are known from the snapshot's allocation map) and compare it with the cache.
    const scanEngine = engineFor(true);
    await scanEngine.run(job); // starts its threads and warms the page cache
    const cat = (): number => {
      const begin = process.hrtime.bigint();
      execFileSync('sh', ['-c', 'cat "$1" > /dev/null', 'cat', image]);
      return seconds(begin);
    };
    const scanSeconds = (record: RunRecord) => stateSeconds(record, 'transfer', 'commit');
    // Both sides swing from one try to the next on a shared machine (and, cold, with the host's
    // own caching): three interleaved tries of each, and the medians.
    const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
    const warmCat: number[] = [];
    const warmScan: number[] = [];
    cat();
    for (let i = 0; i < TRIES; i++) {
      warmCat.push(cat());
      warmScan.push(scanSeconds(await scanEngine.run(job)));
    }
    const coldCat: number[] = [];
    const coldScan: number[] = [];
    const coldDevice: string[] = [];
    for (let i = 0; i < TRIES && dropCaches(); i++) {
      const beforeCat = diskCounters(image);
      coldCat.push(cat());
      const afterCat = diskCounters(image);
      dropCaches();
      const beforeScan = diskCounters(image);
      const runStart = process.hrtime.bigint();
      const record = await scanEngine.run(job);
      const runMs = seconds(runStart) * 1000;
      const afterScan = diskCounters(image);
      coldScan.push(scanSeconds(record));
      if (beforeCat) {
        coldDevice.push(
          `cat ${describeIo(beforeCat, afterCat, coldCat[i]! * 1000)}; whole scan run (its journal and cache fsyncs included) ${describeIo(beforeScan, afterScan, runMs)}`,
        );
      }
    }
    const bytesScanned = size;

    const rows = [
      [
        'rsync --inplace --no-whole-file',
        skipRsync ? 'skipped' : `${rsyncSeconds.toFixed(2)} s`,
        formatBytes(rsyncBytes),
      ],
      [`replikit incremental (${mode})`, `${replikitSeconds.toFixed(2)} s`, formatBytes(incremental.stats.bytesSent)],
    ];
    for (const row of rows) console.log(`${row[0]!.padEnd(44)} ${row[1]!.padStart(10)} ${row[2]!.padStart(12)}`);
    console.log(
      `  replikit: snapshot ${stateSeconds(incremental, 'snapshot', 'plan').toFixed(2)} s, transfer ${stateSeconds(incremental, 'transfer', 'commit').toFixed(2)} s, ` +
        `commit+cleanup ${stateSeconds(incremental, 'commit', 'completed').toFixed(2)} s; read ${formatBytes(incremental.stats.bytesRead)} of the source, ` +
        `${formatBytes(incremental.stats.bytesReadReplica)} of the replica; ${incremental.stats.blocksChanged} blocks changed, ${incremental.stats.blocksDelta} as deltas`,
    );
    if (overNetwork) {
      console.log(
        `  the same incremental over a loopback TCP session: ${formatBytes(overNetwork.stats.bytesSent)} on the wire, ` +
          `read ${formatBytes(overNetwork.stats.bytesRead)} of the source (the previous snapshot's blocks for deltas included); ` +
          `${overNetwork.stats.blocksChanged} blocks changed, ${overNetwork.stats.blocksDelta} as deltas`,
      );
    }
    if (!skipRsync) {
      console.log(`speed ratio rsync/replikit: ${(rsyncSeconds / replikitSeconds).toFixed(2)}x (goal ≥ 10x)`);
      if (overNetwork) {
        console.log(
          `bytes ratio replikit/rsync, on the wire of a network run: ${(overNetwork.stats.bytesSent / rsyncBytes).toFixed(3)} (goal ≤ 1)`,
        );
      }
    }
    console.log(
      `source reads of the local incremental run: ${formatBytes(incremental.stats.bytesRead)} for ${formatBytes(incremental.stats.blocksChanged * BLOCK)} of changed blocks (goal: no more)`,
    );
    const scanLine = (label: string, scans: number[], cats: number[]) => {
      const scanRate = bytesScanned / median(scans);
      const catRate = bytesScanned / median(cats);
      const each = scans.map((s, i) => (cats[i]! / s).toFixed(2)).join(', ');
      console.log(
        `full scan, ${label}: engine read+hash+compare ${formatBytes(scanRate)}/s, cat ${formatBytes(catRate)}/s ` +
          `(medians of ${scans.length}); ratio ${(scanRate / catRate).toFixed(2)} (goal ≥ 0.7; each try: ${each})`,
      );
    };
    scanLine('warm page cache', warmScan, warmCat);
    if (coldScan.length > 0) {
      scanLine('cold page cache', coldScan, coldCat);
      for (const [i, line] of coldDevice.entries()) console.log(`  cold try ${i + 1}: ${line}`);
    } else console.log('full scan, cold page cache: skipped (cannot drop the page cache without root)');
    console.log(`peak RSS of this process: ${formatBytes(process.resourceUsage().maxRSS * 1024)}`);
    await engine.close();
    await scanEngine.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
