// Single-pass backup and replicate: each run records a backup version of exactly the data it
// replicated, reading the source once; the version restores byte-identical to the replica.
import { randomBytes, randomFillSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { mkdtemp, open, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DriverRegistry, FileStateStore, type JobSpecInput, ReplicationEngine } from '@replikit/core';
import { createFileDriver, createFileVM, fileDriver, writeGuestDisk } from '@replikit/driver-file';
import { localTransport } from '@replikit/transport';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createHashingPool, FileBlockStore, FileCacheProvider } from '../src/index.js';

const MiB = 1024 * 1024;
let dir: string;
let store: FileBlockStore;
let job: JobSpecInput;
let engine: ReplicationEngine;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'replikit-single-pass-'));
  await createFileVM(join(dir, 'vms'), {
    name: 'web',
    disks: [
      { id: 'system', size: 6 * MiB },
      { id: 'data', size: 2 * MiB + 4096 },
    ],
  });
  await writeGuestDisk(join(dir, 'vms'), 'web', 'system', 0, randomFillSync(new Uint8Array(3 * MiB)));
  await writeGuestDisk(join(dir, 'vms'), 'web', 'data', MiB, new Uint8Array(MiB).fill(42));
  store = new FileBlockStore(join(dir, 'store'));
  job = {
    name: 'sp',
    source: { driver: 'file', root: join(dir, 'vms'), vm: 'web' },
    target: { driver: 'file', root: join(dir, 'replicas') },
    method: 'qhybrid',
    options: { singlePass: true, replicationCache: true },
  };
  engine = new ReplicationEngine({
    transport: localTransport(),
    stateStore: new FileStateStore(join(dir, 'state')),
    drivers: new DriverRegistry().register(fileDriver),
    digest: 'xxh128',
    hasher: (algorithm) => createHashingPool({ algorithm, threads: 2 }),
    cache: new FileCacheProvider(join(dir, 'state', 'cache')),
    backup: store,
  });
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function replicaImages(): Promise<Buffer[]> {
  return Promise.all(['system', 'data'].map((id) => readFile(join(dir, 'replicas', 'web-replica', `${id}.raw`))));
}

async function restoredImages(version: string): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for (const id of ['system', 'data']) {
    const path = join(dir, `${version}-${id}.raw`);
    await store.restore('web', version, id, path);
    out.push(await readFile(path));
  }
  return out;
}

async function expectSame(a: Buffer[], b: Buffer[]) {
  expect(a.map((x) => x.length)).toEqual(b.map((x) => x.length));
  for (let i = 0; i < a.length; i++) expect(Buffer.compare(a[i]!, b[i]!), `disk ${i}`).toBe(0);
}

describe('single-pass backup and replicate', () => {
  it('records a version per run that restores byte-identical to the replica', async () => {
    const first = await engine.run(job);
    expect(first.backup?.version).toBe(first.runId);
    const v1 = await restoredImages(first.runId);
    await expectSame(v1, await replicaImages());

    for (let i = 0; i < 8; i++) {
      await writeGuestDisk(join(dir, 'vms'), 'web', 'system', i * 700 * 1024, randomFillSync(new Uint8Array(4096)));
    }
    await writeGuestDisk(join(dir, 'vms'), 'web', 'data', MiB, new Uint8Array(65536)); // zeroed
    const second = await engine.run(job);
    expect(second.backup).toEqual({ baseVersion: first.runId, version: second.runId });
    expect(second.stats.blocksChanged + second.stats.blocksZero).toBeLessThanOrEqual(10);
    await expectSame(await restoredImages(second.runId), await replicaImages());
    // the first version is still what it was
    await expectSame(await restoredImages(first.runId), v1);
    expect((await store.list('web')).map((v) => v.id)).toEqual([first.runId, second.runId]);
    expect((await store.verify('web', second.runId)).bad).toEqual([]);
  });

  it('records a whole version (no base) after the replica was booted', async () => {
    await engine.run(job);
    const target = createFileDriver({ root: join(dir, 'replicas') });
    await target.power('web-replica', 'start');
    await target.power('web-replica', 'shutdown');
    const handle = await open(join(dir, 'replicas', 'web-replica', 'system.raw'), 'r+');
    await handle.write(Buffer.alloc(4096, 0xab), 0, 4096, 8192);
    await handle.close();
    const second = await engine.run(job);
    expect(second.backup?.baseVersion).toBeUndefined();
    await expectSame(await restoredImages(second.runId), await replicaImages());
  });

  it('records a whole version when the base version was deleted or has another block size', async () => {
    const first = await engine.run(job);
    await store.delete('web', first.runId); // `replikit backup delete` of the newest version
    await writeGuestDisk(join(dir, 'vms'), 'web', 'system', 0, randomFillSync(new Uint8Array(4096)));
    expect((await engine.plan(job)).disks.map((disk) => disk.reason.code)).toEqual([
      'BACKUP_BASE_MISSING',
      'BACKUP_BASE_MISSING',
    ]);
    const second = await engine.run(job);
    expect(second.backup?.baseVersion).toBeUndefined();
    await expectSame(await restoredImages(second.runId), await replicaImages());

    await writeGuestDisk(join(dir, 'vms'), 'web', 'system', MiB, randomFillSync(new Uint8Array(4096)));
    const third = await engine.run({ ...job, blockSize: '1MiB' }); // the job's block size was edited
    expect(third.backup?.baseVersion).toBeUndefined();
    await expectSame(await restoredImages(third.runId), await replicaImages());
  });

  it('records a whole version when chunks of the base version are gone (a pack lost)', async () => {
    await engine.run(job);
    const packs = join(dir, 'store', 'packs');
    for (const name of await readdir(packs)) if (name.endsWith('.pack')) await rm(join(packs, name));
    await writeGuestDisk(join(dir, 'vms'), 'web', 'system', 0, randomFillSync(new Uint8Array(4096)));
    const second = await engine.run(job);
    expect(second.backup?.baseVersion).toBeUndefined();
    expect((await store.verify('web', second.runId)).bad).toEqual([]);
    await expectSame(await restoredImages(second.runId), await replicaImages());
  });

  it('a resume given the wrong key is refused and leaves the stopped run resumable', async () => {
    const keyed = (key: Buffer, name: string) => {
      const path = join(dir, name);
      writeFileSync(path, key, { mode: 0o600 });
      return new ReplicationEngine({
        transport: localTransport(),
        stateStore: new FileStateStore(join(dir, 'state')),
        drivers: new DriverRegistry().register(fileDriver),
        digest: 'xxh128',
        hasher: (algorithm) => createHashingPool({ algorithm, threads: 1 }),
        backup: new FileBlockStore(join(dir, 'sealed'), { keyFile: path }),
      });
    };
    const right = keyed(randomBytes(32), 'right.key');
    const stop = new AbortController();
    right.on('state', (s) => {
      if (s.to === 'transfer') stop.abort('window');
    });
    await expect(right.run(job, { suspend: stop.signal })).rejects.toMatchObject({ code: 'E_ABORTED' });
    right.removeAllListeners('state');
    const parked = (await right.listRuns()).at(-1)!;
    expect(parked.stopped).toBeDefined();

    await expect(keyed(randomBytes(32), 'wrong.key').resume(parked.runId)).rejects.toMatchObject({ code: 'E_AUTH' });
    expect((await right.listRuns()).at(-1)).toMatchObject({ state: parked.state, stopped: parked.stopped });
    expect((await right.resume(parked.runId)).state).toBe('completed');
  });

  it('fails in prepare without a block store, touching nothing', async () => {
    const bare = new ReplicationEngine({
      transport: localTransport(),
      stateStore: new FileStateStore(join(dir, 'state2')),
      drivers: new DriverRegistry().register(fileDriver),
    });
    await expect(bare.run(job)).rejects.toMatchObject({
      code: 'E_INPUT',
      message: expect.stringMatching(/singlePass/),
    });
  });
});
