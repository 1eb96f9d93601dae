import type { Replica, ReplicaSpec } from '@replikit/core';
import { compareBytes, readWholeDisk, testPattern } from '@replikit/core/testing';
import { fault } from '@replikit/xapi-sim';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { XenDriver } from '../src/index.js';
import { startPool, type TestPool } from './helpers/xen-pool.js';

/*
 * Issue 17, crash safety (found by the crash matrix): a writer clones the replica disk
 * (`VDI.clone`), then tags the clone as pending in further calls. An engine killed between the
 * clone and its tags left a VDI that nothing found again: not pending, attached to nothing. Here
 * the first call after the clone fails (as a kill there would stop it); the run that resumes, or
 * the rollback, leaves no such VDI.
 */

const MiB = 1024 * 1024;
type XRecords = Record<string, Record<string, unknown>>;

describe('a writer cut between its VDI.clone and the clone’s pending tags', () => {
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

  /** VDIs of a replica that no VM uses and no run will write: what nothing would ever clean. */
  async function strayVdis(): Promise<string[]> {
    const all = await pool.call<XRecords>('VDI.get_all_records');
    return Object.values(all)
      .filter((vdi) => {
        const config = vdi.other_config as Record<string, string>;
        return (
          config['replikit:disk'] !== undefined &&
          config['replikit:pending-of'] === undefined &&
          config['replikit:cbt-base-of'] === undefined &&
          (vdi.VBDs as string[]).length === 0
        );
      })
      .map((vdi) => String(vdi.name_label));
  }

  async function replicaWithPoint(): Promise<{ replica: Replica; first: Uint8Array }> {
    const vm = await pool.makeVM('stray', [2 * MiB, MiB]);
    const source = await hv.getVM(vm.uuid);
    const spec: ReplicaSpec = {
      name: 'job-stray',
      source,
      disks: source.disks.map((d) => ({ sourceDiskId: d.id, size: d.size })),
    };
    const replica = await hv.ensureReplica(spec);
    const first = testPattern(1, 2 * MiB);
    const writer = await hv.openWriter(replica, replica.disks[0]!, { runId: 'run-1' });
    await writer.write(0, first);
    await writer.close();
    await hv.createRestorePoint(replica, 'run-1');
    return { replica, first };
  }

  async function cutAfterClone(replica: Replica): Promise<void> {
    pool.sim.faults.failNext('VDI.remove_from_other_config', 'INTERNAL_ERROR', 'cut after the clone');
    await expect(hv.openWriter(replica, replica.disks[0]!, { runId: 'run-2' })).rejects.toThrow(/cut after the clone/);
  }

  it('the resumed run writes and commits; no stray VDI is left', async () => {
    const { replica } = await replicaWithPoint();
    await cutAfterClone(replica);
    const second = testPattern(2, 2 * MiB);
    const writer = await hv.openWriter(replica, replica.disks[0]!, { runId: 'run-2' });
    await writer.write(0, second);
    await writer.close();
    await hv.createRestorePoint(replica, 'run-2');
    expect(compareBytes(await readWholeDisk(hv, replica.disks[0]!), second)).toBe('equal');
    expect(await strayVdis()).toEqual([]);
  });

  it('a commit cut after a clone was swapped in completes when asked again: the written data, no stray VDI', async () => {
    const { replica } = await replicaWithPoint();
    const second = testPattern(3, 2 * MiB);
    const writer = await hv.openWriter(replica, replica.disks[0]!, { runId: 'run-2' });
    await writer.write(0, second);
    await writer.close();
    // The clone's VBD is created, its pending tags not yet removed: the commit stops there.
    pool.sim.faults.failNext('VDI.remove_from_other_config', 'INTERNAL_ERROR', 'cut in the commit');
    await expect(hv.createRestorePoint(replica, 'run-2')).rejects.toThrow(/cut in the commit/);
    await hv.createRestorePoint(replica, 'run-2');
    expect(compareBytes(await readWholeDisk(hv, replica.disks[0]!), second)).toBe('equal');
    expect(await strayVdis()).toEqual([]);
  });

  it('a commit cut after a clone was swapped in, then rolled back: the restore point, no stray VDI', async () => {
    const { replica, first } = await replicaWithPoint();
    const writer = await hv.openWriter(replica, replica.disks[0]!, { runId: 'run-2' });
    await writer.write(0, testPattern(4, 2 * MiB));
    await writer.close();
    pool.sim.faults.failNext('VDI.remove_from_other_config', 'INTERNAL_ERROR', 'cut in the commit');
    await expect(hv.createRestorePoint(replica, 'run-2')).rejects.toThrow(/cut in the commit/);
    const [point] = await hv.listRestorePoints(replica);
    await hv.revertTo(replica, point!);
    expect(compareBytes(await readWholeDisk(hv, replica.disks[0]!), first)).toBe('equal');
    expect(await strayVdis()).toEqual([]);
  });

  it('a restore point deleted halfway (its VM gone, not its disks): the run’s end destroys the disks', async () => {
    const { replica } = await replicaWithPoint();
    const writer = await hv.openWriter(replica, replica.disks[0]!, { runId: 'run-2' });
    await writer.write(0, testPattern(5, 2 * MiB));
    await writer.close();
    const owner = { runId: 'run-2', host: 'test', pid: process.pid, startedAt: new Date().toISOString() };
    await hv.claimReplica(replica, owner);
    // Retention 1 prunes point run-1: its VM is destroyed, then the cut stops the prune (the
    // commit destroys one replaced disk first: the second VDI.destroy is the prune's).
    const original = pool.sim.state.call.bind(pool.sim.state);
    let destroys = 0;
    pool.sim.state.call = (name, params) => {
      if (name.endsWith('VDI.destroy') && ++destroys === 2) throw fault('INTERNAL_ERROR', 'cut in the prune');
      return original(name, params);
    };
    await expect(hv.createRestorePoint(replica, 'run-2', { retention: 1 })).rejects.toThrow(/cut in the prune/);
    pool.sim.state.call = original;
    expect((await hv.listRestorePoints(replica)).map((p) => p.label)).toEqual(['run-2']);
    // The resumed run: its commit is done already (same label), then its end.
    await hv.createRestorePoint(replica, 'run-2', { retention: 1 });
    await hv.releaseReplica(replica, 'run-2');
    expect(await strayVdis()).toEqual([]);
  });

  it('the rollback returns to the restore point; no stray VDI is left', async () => {
    const { replica, first } = await replicaWithPoint();
    await cutAfterClone(replica);
    const [point] = await hv.listRestorePoints(replica);
    await hv.revertTo(replica, point!);
    expect(compareBytes(await readWholeDisk(hv, replica.disks[0]!), first)).toBe('equal');
    expect(await strayVdis()).toEqual([]);
  });
});
