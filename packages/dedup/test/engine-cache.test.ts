// The replication cache at work in the engine, on the real file driver: a trusted cache means the
// replica is never read; a booted or damaged replica/cache is detected and re-verified.
import { randomFillSync } from 'node:crypto';
import { mkdtemp, open, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DriverRegistry, FileStateStore, type JobSpecInput, ReplicationEngine } from '@replikit/core';
import { createFileDriver, createFileVM, fileDriver, writeGuestDisk } from '@replikit/driver-file';
import { localTransport } from '@replikit/transport';
import { createXXHash128 } from 'hash-wasm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CACHE_HEADER_BYTES } from '../src/cache-file.js';
import { createHashingPool, FileCacheProvider } from '../src/index.js';

const MiB = 1024 * 1024;
let dir: string;
let engine: ReplicationEngine;
const warnings: string[] = [];

let job: JobSpecInput;

async function equalToSource(): Promise<boolean> {
  const source = createFileDriver({ root: join(dir, 'vms') });
  const target = createFileDriver({ root: join(dir, 'replicas') });
  const [a, b] = [await source.getVM('web'), await target.getVM('web-replica')];
  for (const [i, disk] of a.disks.entries()) {
    const [ra, rb] = [await source.openReader(disk), await target.openReader(b.disks[i]!)];
    const [da, db] = [await ra.read(0, disk.size), await rb.read(0, disk.size)];
    await Promise.all([ra.close(), rb.close()]);
    if (!Buffer.from(da).equals(Buffer.from(db))) return false;
  }
  return true;
}

async function guestWrites(count: number) {
  for (let i = 0; i < count; i++) {
    const offset = Math.floor(Math.random() * ((8 * MiB) / 4096)) * 4096; // one 64 KiB block per write
    await writeGuestDisk(join(dir, 'vms'), 'web', 'system', offset, randomFillSync(new Uint8Array(4096)));
  }
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'replikit-dedup-engine-'));
  warnings.length = 0;
  await createFileVM(join(dir, 'vms'), {
    name: 'web',
    disks: [
      { id: 'system', size: 8 * MiB },
      { id: 'data', size: 2 * MiB },
    ],
  });
  await writeGuestDisk(join(dir, 'vms'), 'web', 'system', 0, randomFillSync(new Uint8Array(5 * MiB)));
  await writeGuestDisk(join(dir, 'vms'), 'web', 'data', MiB, randomFillSync(new Uint8Array(MiB)));
  job = {
    name: 'cached',
    source: { driver: 'file', root: join(dir, 'vms'), vm: 'web' },
    target: { driver: 'file', root: join(dir, 'replicas') },
    method: 'qhybrid',
    options: { replicationCache: true },
  };
  const drivers = new DriverRegistry().register(fileDriver);
  engine = new ReplicationEngine({
    transport: localTransport(),
    stateStore: new FileStateStore(join(dir, 'state')),
    drivers,
    digest: 'xxh128',
    hasher: (algorithm) => createHashingPool({ algorithm, threads: 2 }),
    cache: new FileCacheProvider(join(dir, 'state', 'cache')),
  });
  engine.on('warning', (w) => warnings.push(w.code));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('trusted replication cache', () => {
  it('never reads the replica when the cache is trusted, and the replica equals the source', async () => {
    const first = await engine.run(job);
    expect(first.digest).toBe('xxh128');
    expect(await readdir(join(dir, 'state', 'cache', 'cached'))).toEqual(['data.rkc', 'system.rkc']);
    await guestWrites(20);
    const second = await engine.run(job);
    expect(second.disks.map((d) => [d.mode, d.digestSource])).toEqual([
      ['hash-diff', 'cache'],
      ['hash-diff', 'cache'],
    ]);
    // The VM tracks no changes: every block compared with a trusted cache, the normal incremental run.
    expect(second.disks.map((d) => d.reason?.code)).toEqual(['INCREMENTAL', 'INCREMENTAL']);
    expect(second.stats.bytesReadReplica).toBe(0);
    expect(second.stats.blocksChanged).toBeGreaterThan(0);
    // In process, a changed block goes whole: no delta, so the previous snapshot is not read
    // (over the network a 4 KiB write travels as a delta: transport/test/deltas.test.ts).
    expect(second.stats.blocksDelta).toBe(0);
    expect(second.stats.bytesRead).toBeLessThanOrEqual(second.stats.bytesScanned); // holes are not read
    expect(second.stats.blocksChanged).toBeLessThanOrEqual(20);
    expect(await equalToSource()).toBe(true);
  });

  it("a scan compares and records a segment per call: the new cache holds every source block's digest", async () => {
    await engine.run(job);
    await guestWrites(10);
    // Zeros over data the replica holds: zero blocks the scan must send and record as zeros.
    await writeGuestDisk(join(dir, 'vms'), 'web', 'system', 2 * MiB, new Uint8Array(256 * 1024));
    const second = await engine.run(job);
    expect(second.disks.map((d) => d.digestSource)).toEqual(['cache', 'cache']);
    expect(second.stats.blocksZero).toBeGreaterThanOrEqual(4);
    expect(await equalToSource()).toBe(true);
    const xxh = await createXXHash128();
    const source = createFileDriver({ root: join(dir, 'vms') });
    for (const disk of (await source.getVM('web')).disks) {
      const reader = await source.openReader(disk);
      const bytes = await reader.read(0, disk.size);
      await reader.close();
      const file = await readFile(join(dir, 'state', 'cache', 'cached', `${disk.id}.rkc`));
      for (let block = 0; block < disk.size / 65536; block++) {
        const data = bytes.subarray(block * 65536, (block + 1) * 65536);
        xxh.init();
        xxh.update(data);
        const want = data.every((b) => b === 0) ? Buffer.alloc(16) : Buffer.from(xxh.digest('binary'));
        const at = CACHE_HEADER_BYTES + block * 16;
        expect(file.subarray(at, at + 16).toString('hex'), `${disk.id} block ${block}`).toBe(want.toString('hex'));
      }
    }
  });

  it('re-verifies a replica booted between runs, then trusts the new cache', async () => {
    await engine.run(job);
    const target = createFileDriver({ root: join(dir, 'replicas') });
    await target.power('web-replica', 'start');
    await target.power('web-replica', 'shutdown');
    // the booted guest wrote to its disk: the cache no longer describes the replica
    const replica = await target.getVM('web-replica');
    const handle = await open(join(dir, 'replicas', 'web-replica', 'system.raw'), 'r+');
    await handle.write(Buffer.alloc(4096, 0xee), 0, 4096, 4096);
    await handle.close();
    expect(replica.id).toBe('web-replica');

    const second = await engine.run(job);
    expect(warnings).toContain('W_CACHE_DISCARDED');
    expect(second.disks.every((d) => d.digestSource === 'replica')).toBe(true);
    expect(second.stats.bytesReadReplica).toBeGreaterThan(0);
    expect(second.stats.blocksChanged).toBeGreaterThanOrEqual(1); // the block the guest changed is repaired
    expect(await equalToSource()).toBe(true);

    const third = await engine.run(job);
    expect(third.disks.every((d) => d.digestSource === 'cache')).toBe(true);
    expect(third.stats.bytesReadReplica).toBe(0);
  });

  it('discards a corrupt cache file with a warning and still produces an exact replica', async () => {
    await engine.run(job);
    await writeFile(join(dir, 'state', 'cache', 'cached', 'system.rkc'), 'garbage');
    await guestWrites(5);
    const second = await engine.run(job);
    expect(warnings).toContain('W_CACHE_DISCARDED');
    expect(second.disks.map((d) => d.digestSource)).toEqual(['replica', 'cache']);
    expect(await equalToSource()).toBe(true);
  });
});
