import { join } from 'node:path';
import { DriverRegistry, FileStateStore, ReplicationEngine } from '@replikit/core';
import { compareBytes, readWholeDisk, testPattern } from '@replikit/core/testing';
import { localTransport } from '@replikit/transport';
import { afterAll, describe, expect, it } from 'vitest';
import { createFileDriver, createFileVM, fileDriver, writeGuestDisk } from '../src/index.js';
import { makeTempRoot, removeTempRoots } from './helpers/temp-root.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/**
 * Issue 11, defect 1, as it was reported: blocks larger than the engine's read buffers (1 MiB for
 * tracked blocks, 4 MiB for scans) were read short, and the zero check saw only the part read.
 */
describe('file driver: the engine with blocks larger than its read buffers', () => {
  afterAll(removeTempRoots);

  /** The reported VM: 32 MiB, 8 MiB of data at 0, 512 KiB at 17 MiB and at 25 MiB; full run; writes; tracked run. */
  const scenario = async (blockSize: number, writes: readonly number[]) => {
    const dir = await makeTempRoot();
    const vms = join(dir, 'vms');
    const drivers = new DriverRegistry().register(fileDriver);
    await createFileVM(vms, { name: 'vm', disks: [{ id: 'd0', size: 32 * MiB }], changeTracking: true });
    await writeGuestDisk(vms, 'vm', 'd0', 0, testPattern(1, 8 * MiB));
    await writeGuestDisk(vms, 'vm', 'd0', 17 * MiB, testPattern(2, 512 * KiB));
    await writeGuestDisk(vms, 'vm', 'd0', 25 * MiB, testPattern(3, 512 * KiB));
    const engine = new ReplicationEngine({
      transport: localTransport(),
      stateStore: new FileStateStore(join(dir, 'state')),
      drivers,
    });
    const job = {
      name: 'big-blocks',
      source: { driver: 'file', root: vms, vm: 'vm', reflink: false },
      target: { driver: 'file', root: join(dir, 'replicas'), reflink: false },
      method: 'qhybrid',
      blockSize,
    };
    const source = createFileDriver({ root: vms });
    const target = createFileDriver({ root: join(dir, 'replicas') });
    const replicaEqualsSource = async () => {
      const [snapshot] = await source.listSnapshots('vm');
      const replica = await target.getVM('vm-replica');
      return compareBytes(
        await readWholeDisk(target, replica.disks[0]!),
        await readWholeDisk(source, snapshot!.disks[0]!),
      );
    };
    try {
      const first = await engine.run(job);
      expect(first.disks[0]?.mode).toBe('full');
      expect(await replicaEqualsSource()).toBe('equal');
      for (const [i, offset] of writes.entries()) {
        await writeGuestDisk(vms, 'vm', 'd0', offset, testPattern(10 + i, 4 * KiB));
      }
      const second = await engine.run(job);
      expect(second.disks[0]?.mode).toBe('tracked');
      expect(second.outcome).toBe('completed');
      expect(await replicaEqualsSource()).toBe('equal');
    } finally {
      await engine.close();
    }
  };

  it('4 MiB blocks: the tracked run sends the changed blocks whole', () => scenario(4 * MiB, [17 * MiB, 26 * MiB]));

  it('2 MiB blocks: a changed block whose first MiB is zero is not taken for zeros', () =>
    scenario(2 * MiB, [17 * MiB]));

  it('2 MiB blocks: a changed block whose first MiB is not zero goes whole', () => scenario(2 * MiB, [26 * MiB]));

  it('8 and 16 MiB blocks: full and tracked runs keep the replica equal', async () => {
    await scenario(8 * MiB, [17 * MiB, 26 * MiB]);
    await scenario(16 * MiB, [17 * MiB, 26 * MiB]);
  });
});
