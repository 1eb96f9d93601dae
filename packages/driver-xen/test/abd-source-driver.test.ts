import { randomBytes } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type XenDriver, xenDriver, xenDriverOptionsSchema } from '../src/index.js';
import { type AbdPool, startAbdPool } from './helpers/abd-pool.js';
import { PASSWORD_ENV } from './helpers/xen-pool.js';

/*
 * Issue 17, ABD push, wired into the driver: a Xen driver created for a job whose method is `abd`
 * reads snapshot disks through the pool's appliance (plugged RO while a reader is open) and
 * releases it at close, also when a run fails with readers still open.
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

describe('the xen driver with method abd (source side)', () => {
  it('reads snapshot disks through the appliance equal to the NBD path; a reader holds its VDI plugged until closed; close stops the appliance', async () => {
    const vm = await pool.makeVM('db', [3 * MiB, MiB]);
    const disks = (await plain.getVM(vm.uuid)).disks;
    await pool.writeGuest(vm.uuid, disks[0]!.id, MiB - 5, randomBytes(70_000));
    await pool.writeGuest(vm.uuid, disks[1]!.id, 0, randomBytes(512));

    const abd = await pool.driver({ abd: { ips: pool.ips } }, { method: 'abd' });
    try {
      expect(abd.capabilities.methods).toContain('abd');
      const snapshot = await abd.snapshot(vm.uuid, 'abd run');
      for (const disk of snapshot.disks) {
        const reference = await plain.openReader(disk);
        const expected = await reference.read(0, reference.size);
        const extents = [];
        for await (const e of reference.allocated()) extents.push({ ...e });
        await reference.close();
        const reader = await abd.openReader(disk);
        const seen = [];
        for await (const e of reader.allocated()) seen.push({ ...e });
        expect(seen).toEqual(extents);
        // The 3 MiB disk has data in its first 2 MiB block only: the rest is not read.
        if (reader.size === 3 * MiB) expect(seen).toEqual([{ offset: 0, length: 2 * MiB }]);
        expect((await pool.pluggedIntoAppliances()).length).toBe(1);
        expect(Buffer.compare(Buffer.from(await reader.read(0, reader.size)), Buffer.from(expected))).toBe(0);
        await reader.close();
        expect(await pool.pluggedIntoAppliances()).toEqual([]);
      }
      expect((await pool.appliances()).map((a) => a.power)).toEqual(['Running']);
      // A run that fails with a reader open: the driver's close cleans up.
      await abd.openReader(snapshot.disks[0]!);
      expect((await pool.pluggedIntoAppliances()).length).toBe(1);
    } finally {
      await abd.close();
    }
    expect(await pool.applianceVbds()).toEqual([]);
    expect((await pool.appliances()).map((a) => a.power)).toEqual(['Halted']);
  });

  it('the definition passes the job method: abd without an abd section is refused with E_INPUT before any login', async () => {
    const options = xenDriverOptionsSchema.parse({ url: pool.sim.url, passwordEnv: PASSWORD_ENV });
    await expect(xenDriver.create(options, { kind: 'xen', side: 'source', method: 'abd' })).rejects.toMatchObject({
      code: 'E_INPUT',
      message: expect.stringContaining('abd.ips'),
    });
    const withAbd = await xenDriver.create(
      xenDriverOptionsSchema.parse({ url: pool.sim.url, passwordEnv: PASSWORD_ENV, abd: { ips: pool.ips } }),
      { kind: 'xen', side: 'source', method: 'abd' },
    );
    expect(withAbd.capabilities.methods).toContain('abd');
    await withAbd.close();
    const qhybrid = await xenDriver.create(options, { kind: 'xen', side: 'source', method: 'qhybrid' });
    expect(qhybrid.capabilities.methods).not.toContain('abd');
    await qhybrid.close();
  });
});
