// Incremental replication against rsync, per issue 4: a raw image (2 GiB by default, about 60 %
// allocated with compressible and random data) is replicated once; then 1 % of its 64 KiB blocks
// get a 4 KiB guest write. On copies of the same pair, `rsync --inplace --no-whole-file` and
// replikit's incremental run (trusted replication cache) are timed, with the bytes each sends.
// Also: full-scan read+hash throughput against `cat image >/dev/null`, and peak memory.
// Flags: --size=2GiB --threads=N
import { execFileSync, spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { mkdir, mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DriverRegistry, FileStateStore, formatBytes, parseSize, ReplicationEngine } from '@replikit/core';
import { createHashingPool, FileCacheProvider } from '@replikit/dedup';
import { createFileDriver, createFileVM } from '@replikit/driver-file';

const BLOCK = 64 * 1024;

function flag(flags: string[], name: string, fallback: string): string {
  return flags.find((f) => f.startsWith(`--${name}=`))?.split('=')[1] ?? fallback;
}

async function fillImage(path: string, size: number): Promise<void> {
  const handle = await open(path, 'r+');
  const stripe = 4 * 1024 * 1024;
  const text = Buffer.from('INFO request served in 12ms path=/api/v1/items status=200\n'.repeat(80000)).subarray(
    0,
    stripe,
  );
  const noise = Buffer.allocUnsafe(stripe);
  try {
    for (let offset = 0, i = 0; offset < size; offset += stripe, i++) {
      const kind = (i * 7) % 10; // 0-3 zero, 4-6 compressible, 7-9 random: 60 % allocated
      if (kind < 4) continue;
      await handle.write(kind < 7 ? text : randomFillSync(noise), 0, Math.min(stripe, size - offset), offset);
    }
  } finally {
    await handle.close();
  }
}

async function guestWrites(path: string, size: number, fraction: number): Promise<number> {
  const handle = await open(path, 'r+');
  const page = Buffer.allocUnsafe(4096);
  let changed = 0;
  try {
    for (let block = 0; block < size / BLOCK; block++) {
      if ((block * 2654435761) % 1000 >= fraction * 1000) continue;
      await handle.write(randomFillSync(page), 0, 4096, block * BLOCK + ((block * 7) % 16) * 4096);
      changed++;
    }
  } finally {
    await handle.close();
  }
  return changed;
}

function seconds(start: bigint): number {
  return Number(process.hrtime.bigint() - start) / 1e9;
}

export async function run(flags: string[]): Promise<void> {
  const size = parseSize(flag(flags, 'size', '2GiB'), '--size');
  const threads = Number(flag(flags, 'threads', '0')) || undefined;
  const dir = await mkdtemp(join(tmpdir(), 'replikit-bench-dedup-'));
  try {
    const vms = join(dir, 'vms');
    const replicas = join(dir, 'replicas');
    await createFileVM(vms, { name: 'bench', disks: [{ id: 'disk', size }] });
    const image = join(vms, 'bench', 'disk.raw');
    await fillImage(image, size);
    const drivers = new DriverRegistry().register('file', (o) => createFileDriver({ root: String(o.root) }));
    const engine = new ReplicationEngine({
      stateStore: new FileStateStore(join(dir, 'state')),
      drivers,
      digest: 'xxh128',
      hasher: (algorithm) => createHashingPool({ algorithm, ...(threads ? { threads } : {}) }),
      cache: new FileCacheProvider(join(dir, 'state', 'cache')),
    });
    const job = {
      name: 'bench',
      source: { driver: 'file', root: vms, vm: 'bench' },
      target: { driver: 'file', root: replicas },
      method: 'qhybrid',
      options: { replicationCache: true },
    };
    console.log(`image ${formatBytes(size)}, 60 % allocated; first (full) replication…`);
    await engine.run(job);

    // rsync's pair: copies of the source and of the replica as they are now.
    await mkdir(join(dir, 'rsync'));
    const rsyncSource = join(dir, 'rsync', 'source.raw');
    const rsyncTarget = join(dir, 'rsync', 'target.raw');
    execFileSync('cp', ['--sparse=always', image, rsyncTarget]);
    const changed = await guestWrites(image, size, 0.01);
    execFileSync('cp', ['--sparse=always', image, rsyncSource]);
    console.log(`guest wrote 4 KiB into ${changed} of ${size / BLOCK} blocks (1 %)`);

    execFileSync('sync');
    let start = process.hrtime.bigint();
    const rsync = spawnSync('rsync', ['--inplace', '--no-whole-file', '--stats', rsyncSource, rsyncTarget], {
      encoding: 'utf8',
    });
    const rsyncSeconds = seconds(start);
    if (rsync.status !== 0) throw new Error(`rsync failed: ${rsync.stderr}`);
    const sent = Number(/Total bytes sent: ([\d,]+)/.exec(rsync.stdout)?.[1]?.replace(/,/g, '') ?? Number.NaN);
    const received = Number(/Total bytes received: ([\d,]+)/.exec(rsync.stdout)?.[1]?.replace(/,/g, '') ?? Number.NaN);
    const rsyncBytes = sent + received;

    start = process.hrtime.bigint();
    const incremental = await engine.run(job);
    const replikitSeconds = seconds(start);
    const transferMs =
      Date.parse(incremental.history.find((h) => h.state === 'commit')!.at) -
      Date.parse(incremental.history.find((h) => h.state === 'transfer')!.at);
    const snapshotMs =
      Date.parse(incremental.history.find((h) => h.state === 'plan')!.at) -
      Date.parse(incremental.history.find((h) => h.state === 'snapshot')!.at);

    // Full-scan read + hash of the snapshot image vs cat.
    execFileSync('sh', ['-c', `cat "${image}" > /dev/null`]);
    start = process.hrtime.bigint();
    execFileSync('sh', ['-c', `cat "${image}" > /dev/null`]);
    const catSeconds = seconds(start);
    // The engine's read path: the driver's reader fills reused shared buffers, hashed in place.
    const pool = await createHashingPool({ algorithm: 'xxh128', ...(threads ? { threads } : {}) });
    const driver = createFileDriver({ root: vms });
    const [disk] = (await driver.getVM('bench')).disks;
    const reader = await driver.openReader(disk!);
    const ring = Array.from({ length: 6 }, () => pool.allocate!(1024 * 1024));
    start = process.hrtime.bigint();
    const inFlight: Array<Promise<unknown>> = [];
    for (let offset = 0, n = 0; offset < size; offset += 1024 * 1024, n++) {
      const buffer = ring[n % ring.length]!.subarray(0, Math.min(1024 * 1024, size - offset));
      if (inFlight.length >= 4) await inFlight.shift();
      await reader.readInto!(offset, buffer);
      const blocks: Uint8Array[] = [];
      for (let at = 0; at < buffer.length; at += BLOCK) blocks.push(buffer.subarray(at, at + BLOCK));
      inFlight.push(pool.hash(blocks));
    }
    await Promise.all(inFlight);
    const hashSeconds = seconds(start);
    await reader.close();
    await driver.close();
    await pool.close?.();

    const rows = [
      ['rsync --inplace --no-whole-file', `${rsyncSeconds.toFixed(2)} s`, formatBytes(rsyncBytes)],
      [
        'replikit incremental (trusted cache)',
        `${replikitSeconds.toFixed(2)} s`,
        formatBytes(incremental.stats.bytesSent),
      ],
    ];
    for (const row of rows) console.log(`${row[0]!.padEnd(40)} ${row[1]!.padStart(10)} ${row[2]!.padStart(12)}`);
    console.log(
      `  replikit: snapshot ${(snapshotMs / 1000).toFixed(2)} s, transfer ${(transferMs / 1000).toFixed(2)} s, replica read ${formatBytes(incremental.stats.bytesReadReplica)}`,
    );
    console.log(`speed ratio rsync/replikit: ${(rsyncSeconds / replikitSeconds).toFixed(2)}x`);
    console.log(`bytes ratio replikit/rsync: ${(incremental.stats.bytesSent / rsyncBytes).toFixed(3)}`);
    const catRate = size / catSeconds;
    const hashRate = size / hashSeconds;
    console.log(
      `full-scan read+hash (xxh128, pool): ${formatBytes(hashRate)}/s; cat: ${formatBytes(catRate)}/s; ratio ${(hashRate / catRate).toFixed(2)}`,
    );
    console.log(`peak RSS: ${formatBytes(process.resourceUsage().maxRSS * 1024)}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
