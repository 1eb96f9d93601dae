import type { ReplicaSpec } from '@replikit/core';
import { compareBytes, readWholeDisk, testPattern } from '@replikit/core/testing';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { XenDriver } from '../src/index.js';
import { startPool, type TestPool } from './helpers/xen-pool.js';

const MiB = 1024 * 1024;

describe('the replica writer (HttpVdiSink: 2 MiB blocks, VHD uploads)', () => {
  let pool: TestPool;
  let hv: XenDriver;
  beforeEach(async () => {
    pool = await startPool();
    hv = await pool.driver();
  });
  afterEach(async () => {
    await hv.close();
    await pool.close();
  });

  it('uploads on its own past 32 held blocks; concurrent writes across those uploads all land', async () => {
    const size = 100 * MiB + 3;
    const vm = await pool.makeVM('many', [size]);
    const source = await hv.getVM(vm.uuid);
    const spec: ReplicaSpec = {
      name: 'job-many',
      source,
      disks: source.disks.map((d) => ({ sourceDiskId: d.id, size: d.size })),
    };
    const replica = await hv.ensureReplica(spec);
    const disk = replica.disks[0]!;
    const model = new Uint8Array(size);
    const writer = await hv.openWriter(replica, disk, { runId: 'run-1' });
    // 50 writes of 1 MiB + 5 bytes at odd offsets, 8 in flight at a time: 50 blocks touched.
    const writes = Array.from({ length: 50 }, (_, i) => ({
      offset: i * 2 * MiB + 1000 + i,
      data: testPattern(i, MiB + 5),
    }));
    for (let i = 0; i < writes.length; i += 8) {
      await Promise.all(writes.slice(i, i + 8).map((w) => writer.write(w.offset, w.data)));
    }
    for (const w of writes) model.set(w.data, w.offset);
    await writer.writeZeroes(10 * MiB, 3 * MiB);
    model.fill(0, 10 * MiB, 13 * MiB);
    await writer.write(size - 3, new Uint8Array([1, 2, 3]));
    model.set([1, 2, 3], size - 3);
    await writer.close();
    await hv.createRestorePoint(replica, 'run-1');
    expect(compareBytes(await readWholeDisk(hv, disk), model)).toBe('equal');
  });
});
