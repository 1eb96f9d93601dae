import { join } from 'node:path';
import { FileStateStore, ReplicationEngine, registerDriver } from '@replikit/core';
import { compareBytes, readWholeDisk, testPattern } from '@replikit/core/testing';
import { localTransport } from '@replikit/transport';
import { afterAll, describe, expect, it } from 'vitest';
import { createFileDriver, createFileVM, fileDriver, openGuestDisk } from '../src/index.js';
import { makeTempRoot, removeTempRoots } from './helpers/temp-root.js';

const MiB = 1024 * 1024;

describe('file driver: the engine replicates a tracked VM with tracked runs', () => {
  afterAll(removeTempRoots);

  it('sends only the tracked blocks and the replica matches the source after each run', async () => {
    const dir = await makeTempRoot();
    const vms = join(dir, 'vms');
    registerDriver(fileDriver, { replace: true });
    const size = 16 * MiB;
    await createFileVM(vms, { name: 'web', disks: [{ id: 'system', size }], changeTracking: true });
    const write = async (seed: number, offsets: number[]) => {
      const disk = await openGuestDisk(vms, 'web', 'system');
      for (const offset of offsets) await disk.write(offset, testPattern(seed + offset, 5000));
      await disk.close();
    };
    await write(1, [0, 3 * MiB, 9 * MiB + 17]);
    const engine = new ReplicationEngine({
      transport: localTransport(),
      stateStore: new FileStateStore(join(dir, 'state')),
    });
    const job = {
      name: 'tracked',
      source: { driver: 'file', root: vms, vm: 'web', reflink: false },
      target: { driver: 'file', root: join(dir, 'replicas'), reflink: false },
      method: 'qhybrid',
    };
    const source = createFileDriver({ root: vms });
    const target = createFileDriver({ root: join(dir, 'replicas') });
    const check = async () => {
      const [snap] = await source.listSnapshots('web');
      const replica = (await target.getVM('web-replica').catch(() => undefined)) ?? (await target.listVMs())[0]!;
      expect(
        compareBytes(await readWholeDisk(target, replica.disks[0]!), await readWholeDisk(source, snap!.disks[0]!)),
      ).toBe('equal');
    };
    const first = await engine.run(job);
    expect(first.disks[0]?.mode).toBe('full');
    await check();
    for (const seed of [2, 3]) {
      await write(seed, [seed * MiB + 100, 15 * MiB]);
      const run = await engine.run(job);
      expect(run.disks[0]?.mode).toBe('tracked');
      expect(run.stats.bytesScanned).toBeLessThanOrEqual(3 * 64 * 1024);
      await check();
      expect(await source.listSnapshots('web')).toHaveLength(1);
    }
    await engine.close();
  });
});
