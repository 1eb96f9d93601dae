import { randomBytes } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AbdLease, openAbdDiskReader, type XenConnection, type XenDriver } from '../src/index.js';
import { type AbdPool, startAbdPool } from './helpers/abd-pool.js';

/*
 * Issue 17, ABD push: the source appliance reads the snapshot VDIs plugged into it, and the
 * engine's side reads them from its agent (a real process) over the transport's `source`
 * feature. What it reads equals what the driver's agentless path (NBD) reads of the same snapshot.
 */

const MiB = 1024 * 1024;
let pool: AbdPool;
let conn: XenConnection;
let hv: XenDriver;

beforeEach(async () => {
  pool = await startAbdPool();
  conn = await pool.connect();
  hv = await pool.driver();
});
afterEach(async () => {
  await hv.close();
  await conn.close();
  await pool.close();
});

describe('ABD push: reading snapshot VDIs through the source appliance', () => {
  it('every disk of a snapshot, plugged RO, reads equal to the NBD read of the same snapshot; after the unplug it cannot be read', async () => {
    const vm = await pool.makeVM('web', [6 * MiB + 512, 2 * MiB]);
    const disks = (await hv.getVM(vm.uuid)).disks;
    await pool.writeGuest(vm.uuid, disks[0]!.id, 0, randomBytes(MiB + 7));
    await pool.writeGuest(vm.uuid, disks[0]!.id, 5 * MiB, randomBytes(MiB + 512));
    await pool.writeGuest(vm.uuid, disks[1]!.id, 3 * 4096, randomBytes(4096));
    const snapshot = await hv.snapshot(vm.uuid, 'abd push');
    // The guest writes on after the snapshot: the reads must not see it.
    await pool.writeGuest(vm.uuid, disks[0]!.id, 0, randomBytes(4096));

    // What the agentless path (NBD) reads of the snapshot, first: it holds the VDIs while it reads.
    const expected: Uint8Array[] = [];
    for (const disk of snapshot.disks) {
      const viaNbd = await hv.openReader(disk);
      try {
        expected.push(await viaNbd.read(0, viaNbd.size));
      } finally {
        await viaNbd.close();
      }
    }
    const lease = await AbdLease.acquire(conn, { ips: pool.ips, srs: [] });
    try {
      for (const [i, disk] of snapshot.disks.entries()) {
        // The snapshot's own VDI (the disk id is the source disk's).
        const vdiRef = await pool.call<string>('VDI.get_by_uuid', String(disk.meta?.vdi));
        const plugged = await lease.plug(vdiRef, 'RO');
        const viaAbd = await openAbdDiskReader(lease, plugged);
        try {
          expect(viaAbd.size).toBe(disk.size);
          const bytes = await viaAbd.read(0, viaAbd.size);
          expect(Buffer.compare(Buffer.from(bytes), Buffer.from(expected[i]!))).toBe(0);
          expect(bytes.some((x) => x !== 0)).toBe(true);
          await lease.unplug(plugged);
          await expect(viaAbd.read(0, 4096)).rejects.toMatchObject({ code: 'E_NOT_FOUND' });
        } finally {
          await viaAbd.close();
        }
      }
    } finally {
      await lease.release();
    }
    expect(await pool.applianceVbds()).toEqual([]);
    await hv.deleteSnapshot(snapshot);
  });
});
