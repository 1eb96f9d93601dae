import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Hypervisor, VMInfo } from '@replikit/core';
import { testPattern } from '@replikit/core/testing';
import { afterAll, describe, expect, it } from 'vitest';
import { createFileDriver } from '../src/index.js';
import { makeTempRoot, removeTempRoots } from './helpers/temp-root.js';

const MiB = 1024 * 1024;
const SOURCE: VMInfo = { id: 'source', name: 'source', cpus: 1, memoryMiB: 256, powerState: 'running', disks: [] };
const owner = (runId: string) => ({ runId, host: 'here', pid: process.pid, startedAt: new Date().toISOString() });

/** A replica with one committed point `v1` and writes of run `pending` pending on it. */
async function replicaWithPending(hv: Hypervisor) {
  const replica = await hv.ensureReplica({ name: 'rep', source: SOURCE, disks: [{ sourceDiskId: 'd0', size: MiB }] });
  const disk = replica.disks[0]!;
  const first = await hv.openWriter(replica, disk);
  await first.write(0, testPattern(1, 4096));
  await first.close();
  const v1 = await hv.createRestorePoint(replica, 'v1');
  const writer = await hv.openWriter(replica, disk);
  await writer.write(8192, testPattern(2, 4096));
  await writer.close();
  return { replica, v1 };
}

async function fenceEpochOf(root: string, replicaId: string): Promise<unknown> {
  const vm = JSON.parse(await readFile(join(root, replicaId, 'vm.json'), 'utf8')) as {
    replica?: { fenceEpoch?: number };
  };
  return vm.replica?.fenceEpoch;
}

describe('file driver: lease fencing of claims, commits and reverts', () => {
  afterAll(removeTempRoots);

  it('keeps the highest epoch and refuses lower ones with E_LEASE_LOST, changing nothing', async () => {
    const root = await makeTempRoot();
    const hv = createFileDriver({ root });
    const { replica, v1 } = await replicaWithPending(hv);
    expect(await fenceEpochOf(root, replica.id)).toBeUndefined();

    await hv.claimReplica(replica, owner('run-new'), { fence: { epoch: 7 } });
    await hv.releaseReplica(replica, 'run-new');
    expect(await fenceEpochOf(root, replica.id)).toBe(7);

    const stale = { fence: { epoch: 6 } };
    await expect(hv.claimReplica(replica, owner('run-old'), stale)).rejects.toMatchObject({ code: 'E_LEASE_LOST' });
    await expect(hv.createRestorePoint(replica, 'late', stale)).rejects.toMatchObject({ code: 'E_LEASE_LOST' });
    await expect(hv.revertTo(replica, v1, stale)).rejects.toMatchObject({ code: 'E_LEASE_LOST' });
    expect(await hv.replicaOwner(replica)).toBeUndefined();
    expect((await hv.listRestorePoints(replica)).map((p) => p.label)).toEqual(['v1']);

    // The same epoch and a higher one go through; the higher one is kept.
    const v2 = await hv.createRestorePoint(replica, 'v2', { fence: { epoch: 7 } });
    expect(v2.label).toBe('v2');
    await hv.revertTo(replica, v1, { fence: { epoch: 9 } });
    expect(await fenceEpochOf(root, replica.id)).toBe(9);
    await expect(hv.createRestorePoint(replica, 'late', { fence: { epoch: 8 } })).rejects.toMatchObject({
      code: 'E_LEASE_LOST',
    });
    // An operation without a fence (a single machine, no lease) is not fenced.
    expect((await hv.createRestorePoint(replica, 'v3')).label).toBe('v3');
  });

  it('refuses a fence whose epoch is not a whole number ≥ 1 (E_INPUT)', async () => {
    const root = await makeTempRoot();
    const hv = createFileDriver({ root });
    const { replica } = await replicaWithPending(hv);
    for (const epoch of [0, -1, 1.5, Number.NaN, '3']) {
      await expect(
        hv.createRestorePoint(replica, 'bad', { fence: { epoch } as unknown as { epoch: number } }),
      ).rejects.toMatchObject({ code: 'E_INPUT' });
    }
  });
});
