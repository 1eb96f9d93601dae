import { randomBytes } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { XenDriver } from '../src/index.js';
import { type AbdPool, startAbdPool } from './helpers/abd-pool.js';

/*
 * Issue 17, ABD target: a run that fails with writers open (no close, no abort from the engine)
 * leaves nothing plugged into the appliance once its rollback deletes the replica, and the
 * driver's close halts the (non-persistent) appliance. A target without an `abd` section keeps
 * writing through XAPI.
 */

const MiB = 1024 * 1024;
let pool: AbdPool;
let plain: XenDriver;

beforeEach(async () => {
  pool = await startAbdPool();
  plain = await pool.driver();
});
afterEach(async () => {
  await plain.close();
  await pool.close();
});

describe('a xen target with an abd section when the run fails', () => {
  it('the rollback unplugs the pending VDIs of open writers; close halts the appliance', async () => {
    const vm = await pool.makeVM('app', [2 * MiB, MiB]);
    const source = await plain.getVM(vm.uuid);
    const target = await pool.driver({ abd: { ips: pool.ips } }, { side: 'target', method: 'cbt' });
    try {
      const replica = await target.ensureReplica({
        name: 'failing',
        source,
        disks: source.disks.map((d) => ({ sourceDiskId: d.id, size: d.size })),
      });
      await target.claimReplica(replica, {
        runId: 'r1',
        host: 'test',
        pid: process.pid,
        startedAt: new Date().toISOString(),
      });
      const writers = await Promise.all(replica.disks.map((d) => target.openWriter(replica, d, { runId: 'r1' })));
      await writers[0]!.write(0, randomBytes(64 * 1024));
      await writers[1]!.write(4096, randomBytes(100));
      expect((await pool.pluggedIntoAppliances()).length).toBe(2);
      // The run fails here: the engine rolls back without closing the writers.
      await target.deleteReplica(replica);
      expect(await pool.applianceVbds()).toEqual([]);
      expect((await pool.appliances()).map((a) => a.power)).toEqual(['Running']);
    } finally {
      await target.close();
    }
    expect(await pool.applianceVbds()).toEqual([]);
    expect((await pool.appliances()).map((a) => a.power)).toEqual(['Halted']);
  });

  it('without an abd section the target writes through XAPI (no appliance is started)', async () => {
    const target = await pool.driver({}, { side: 'target', method: 'cbt' });
    expect(target.abdWriteStats).toBeUndefined();
    await target.close();
    expect((await pool.appliances()).filter((a) => a.power === 'Running')).toEqual([]);
  });
});
