// Change tracking and the trusted replication cache together: the engine reads only the tracked
// blocks, compares them with the cache, and carries the cache's digests of every other block into
// the new cache, which must describe the replica exactly.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DriverRegistry, FileStateStore, type JobSpecInput, ReplicationEngine } from '@replikit/core';
import { localTransport } from '@replikit/transport';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { instanceDriver } from '../../core/test/helpers/instance-driver.js';
import { createMemoryDriver, type MemoryDriver } from '../../core/test/helpers/memory-driver.js';
import { createHashingPool, FileBlockStore, FileCacheProvider } from '../src/index.js';

const MiB = 1024 * 1024;
const BLOCK = 65536;
let dir: string;
let source: MemoryDriver;
let target: MemoryDriver;
let engine: ReplicationEngine;
let cache: FileCacheProvider;
const warnings: string[] = [];
const job: JobSpecInput = {
  name: 'tracked',
  source: { driver: 'memsrc', vm: 'vm1' },
  target: { driver: 'memdst' },
  method: 'qhybrid',
  blockSize: BLOCK,
  options: { replicationCache: true },
};

function fill(data: Uint8Array, seed: number, from = 0, to = data.length) {
  let x = seed;
  for (let i = from; i < to; i++) {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    data[i] = x >>> 16;
  }
}

const sourceDisk = (id: string) => source.vms.get('vm1')!.disks.get(id)!;
const replicaDisk = (id: string) => target.vms.get('vm1-replica')!.disks.get(id)!;
const equal = (id: string) => Buffer.compare(sourceDisk(id), replicaDisk(id)) === 0;
const memoryDrivers = () =>
  new DriverRegistry()
    .register(instanceDriver('memsrc', () => source))
    .register(instanceDriver('memdst', () => target));

/** The committed cache of a disk, block by block, against digests of the source computed here. */
async function cacheMatchesSource(id: string): Promise<boolean> {
  const data = sourceDisk(id);
  const blockCount = Math.ceil(data.length / BLOCK);
  const fingerprint = (await target.replicaState({ id: 'vm1-replica', name: 'vm1-replica', disks: [], created: false }))
    .value;
  const opened = await cache.open(
    { job: 'tracked', diskId: id },
    { blockSize: BLOCK, blockCount, digest: 'xxh128', fingerprint },
  );
  if (opened.status !== 'ok') throw new Error(`cache not usable: ${opened.status}`);
  const pool = await createHashingPool({ algorithm: 'xxh128', threads: 1 });
  try {
    for await (const { index, digest } of opened.reader.digests(0)) {
      const block = data.subarray(index * BLOCK, Math.min(data.length, (index + 1) * BLOCK));
      const zero = block.every((v) => v === 0);
      if (zero !== (digest === null)) return false;
      if (!zero && Buffer.compare((await pool.hash([block]))[0]!, digest!) !== 0) return false;
    }
  } finally {
    await opened.reader.close();
    await pool.close?.();
  }
  return true;
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'replikit-tracked-cache-'));
  warnings.length = 0;
  source = createMemoryDriver({ changeTracking: true });
  target = createMemoryDriver();
  source.addVm('vm1', [
    { id: 'a', size: 4 * MiB },
    { id: 'b', size: 2 * MiB + 12345 },
  ]);
  fill(sourceDisk('a'), 1, 0, 3 * MiB);
  fill(sourceDisk('b'), 2, MiB, sourceDisk('b').length);
  cache = new FileCacheProvider(join(dir, 'cache'));
  engine = new ReplicationEngine({
    transport: localTransport(),
    stateStore: new FileStateStore(join(dir, 'state')),
    drivers: memoryDrivers(),
    digest: 'xxh128',
    hasher: (algorithm) => createHashingPool({ algorithm, threads: 2 }),
    cache,
  });
  engine.on('warning', (w) => warnings.push(w.code));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('tracked blocks with a trusted cache', () => {
  it('reads only the tracked blocks, never the replica, and leaves a cache equal to the source', async () => {
    await engine.run(job);
    const a = sourceDisk('a');
    a.fill(0x5a, 10 * BLOCK + 100, 10 * BLOCK + 4196); // 4 KiB inside a data block
    a.fill(0x11, 50 * BLOCK, 50 * BLOCK + 10); // a block in the zero tail
    a.fill(0, 20 * BLOCK, 21 * BLOCK); // a data block zeroed
    const b = sourceDisk('b');
    b[b.length - 1]! ^= 0xff; // the last, short block
    const second = await engine.run(job);
    expect(second.disks.map((d) => [d.mode, d.digestSource])).toEqual([
      ['tracked', 'cache'],
      ['tracked', 'cache'],
    ]);
    expect(second.stats.bytesReadReplica).toBe(0);
    expect(second.stats.blocksScanned).toBe(4); // the tracked blocks, nothing else
    expect(second.stats.blocksChanged).toBe(3);
    expect(second.stats.blocksZero).toBe(1);
    // In process, blocks go whole (no deltas, whose bases would be read from the previous
    // snapshot): each tracked block of the source is read once. (Deltas: transport/test/deltas.test.ts.)
    expect(second.stats.blocksDelta).toBe(0);
    expect(second.stats.bytesRead).toBe(second.stats.bytesScanned);
    expect(equal('a') && equal('b')).toBe(true);
    expect(await cacheMatchesSource('a')).toBe(true);
    expect(await cacheMatchesSource('b')).toBe(true);

    // A block written back to what the replica holds is tracked but not sent.
    a.fill(0, 50 * BLOCK, 50 * BLOCK + 10);
    a.fill(0x77, 30 * BLOCK, 30 * BLOCK + 1);
    const third = await engine.run(job);
    expect(third.disks[0]!.mode).toBe('tracked');
    expect(third.stats.blocksScanned).toBe(2);
    expect(third.stats.blocksChanged).toBe(1);
    expect(third.stats.blocksZero).toBe(1);
    expect(equal('a') && equal('b')).toBe(true);
    expect(await cacheMatchesSource('a')).toBe(true);
  });

  it('falls back to a verified diff when the cache is damaged, and tracks again after', async () => {
    await engine.run(job);
    await writeFile(join(dir, 'cache', 'tracked', 'a.rkc'), 'garbage');
    sourceDisk('a').fill(3, 5 * BLOCK, 5 * BLOCK + 4096);
    const second = await engine.run(job);
    expect(warnings).toContain('W_CACHE_DISCARDED');
    expect(second.disks.map((d) => [d.mode, d.digestSource])).toEqual([
      ['hash-diff', 'replica'],
      ['tracked', 'cache'],
    ]);
    expect(equal('a')).toBe(true);
    sourceDisk('a').fill(4, 6 * BLOCK, 6 * BLOCK + 4096);
    const third = await engine.run(job);
    expect(third.disks[0]).toMatchObject({ mode: 'tracked', digestSource: 'cache' });
    expect(equal('a')).toBe(true);
    expect(await cacheMatchesSource('a')).toBe(true);
  });

  it('single-pass: reads in full when there is no base version, then only tracked blocks', async () => {
    const store = new FileBlockStore(join(dir, 'store'));
    const withStore = new ReplicationEngine({
      transport: localTransport(),
      stateStore: new FileStateStore(join(dir, 'state')),
      drivers: memoryDrivers(),
      digest: 'xxh128',
      hasher: (algorithm) => createHashingPool({ algorithm, threads: 2 }),
      cache,
      backup: store,
    });
    await withStore.run(job); // no backup yet
    sourceDisk('a').fill(9, 7 * BLOCK, 7 * BLOCK + 4096);
    const singlePass = { ...job, options: { ...job.options, singlePass: true } };
    const second = await withStore.run(singlePass);
    expect(second.disks.map((d) => d.mode)).toEqual(['hash-diff', 'hash-diff']); // no base version: every block
    expect(second.disks.map((d) => d.reason?.code)).toEqual(['BACKUP_BASE_MISSING', 'BACKUP_BASE_MISSING']);
    const asOfSecond = ['a', 'b'].map((id) => replicaDisk(id).slice());
    sourceDisk('a').fill(8, 9 * BLOCK, 9 * BLOCK + 4096);
    const third = await withStore.run(singlePass);
    expect(third.disks.map((d) => d.mode)).toEqual(['tracked', 'tracked']);
    const restored = async (version: string, id: string) => {
      const path = join(dir, `${version}-${id}.raw`);
      await store.restore('vm1', version, id, path);
      return readFile(path);
    };
    for (const [i, id] of ['a', 'b'].entries()) {
      expect(Buffer.compare(await restored(second.backup!.version!, id), asOfSecond[i]!), id).toBe(0);
      expect(Buffer.compare(await restored(third.backup!.version!, id), replicaDisk(id)), id).toBe(0);
    }
  });
});
