// A local incremental run reads each changed block of the source once: the in-process transport
// takes no deltas, so the previous snapshot's blocks (a delta's base) are never read.
import { randomFillSync } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DriverRegistry, FileStateStore, type JobSpecInput, ReplicationEngine } from '@replikit/core';
import { compareBytes, readWholeDisk } from '@replikit/core/testing';
import { createFileDriver, createFileVM, fileDriver, writeGuestDisk } from '@replikit/driver-file';
import { localTransport } from '@replikit/transport';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createHashingPool, FileCacheProvider } from '../src/index.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const BLOCK = 64 * KiB;
let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'replikit-read-once-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('a tracked incremental run with a cache, through the in-process transport', () => {
  it('reads exactly the changed blocks of the source, and the replica equals the source snapshot', async () => {
    const vms = join(dir, 'vms');
    const size = 16 * MiB;
    await createFileVM(vms, { name: 'web', disks: [{ id: 'system', size }], changeTracking: true });
    await writeGuestDisk(vms, 'web', 'system', 0, randomFillSync(new Uint8Array(12 * MiB)));
    const engine = new ReplicationEngine({
      transport: localTransport(),
      stateStore: new FileStateStore(join(dir, 'state')),
      drivers: new DriverRegistry().register(fileDriver),
      digest: 'xxh128',
      hasher: (algorithm) => createHashingPool({ algorithm, threads: 2 }),
      cache: new FileCacheProvider(join(dir, 'state', 'cache')),
    });
    const job: JobSpecInput = {
      name: 'read-once',
      source: { driver: 'file', root: vms, vm: 'web', reflink: false },
      target: { driver: 'file', root: join(dir, 'replicas'), reflink: false },
      method: 'qhybrid',
      blockSize: BLOCK,
      options: { replicationCache: true },
    };
    try {
      expect((await engine.run(job)).disks[0]?.mode).toBe('full');
      // A few bytes in each of 20 blocks that hold data: deltas would be tiny, so a channel that
      // took deltas would have been handed every one of them (and their bases read).
      const changed = [1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 100, 101, 102, 120, 150, 160, 170, 180, 190, 191];
      for (const block of changed) {
        await writeGuestDisk(vms, 'web', 'system', block * BLOCK + 100, randomFillSync(new Uint8Array(300)));
      }
      const run = await engine.run(job);
      const disk = run.disks[0]!;
      expect(disk.mode).toBe('tracked');
      expect(disk.digestSource).toBe('cache');
      expect(run.stats.blocksChanged).toBe(changed.length);
      expect(run.stats.bytesRead).toBe(changed.length * BLOCK);

      const source = createFileDriver({ root: vms });
      const target = createFileDriver({ root: join(dir, 'replicas') });
      const [snapshot] = await source.listSnapshots('web');
      const replica = await target.getVM(run.replica!.name);
      expect(
        compareBytes(await readWholeDisk(target, replica.disks[0]!), await readWholeDisk(source, snapshot!.disks[0]!)),
      ).toBe('equal');
    } finally {
      await engine.close();
    }
  });
});
