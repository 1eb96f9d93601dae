import { randomBytes } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AbdLease, pullVdiThroughAbd, type XenConnection, type XenDriver } from '../src/index.js';
import { type AbdPool, startAbdPool } from './helpers/abd-pool.js';

/*
 * Issue 17, ABD pull: two pools, each with its appliance (a real agent process); the target
 * appliance connects to the source appliance and copies only the blocks whose digests differ.
 */

const MiB = 1024 * 1024;
let site: { pool: AbdPool; conn: XenConnection }[];
let hv: XenDriver;

beforeEach(async () => {
  site = [];
  for (let i = 0; i < 2; i++) {
    const pool = await startAbdPool();
    site.push({ pool, conn: await pool.connect() });
  }
  hv = await site[0]!.pool.driver();
});
afterEach(async () => {
  await hv.close();
  for (const { pool, conn } of site) {
    await conn.close();
    await pool.close();
  }
});

/** The VDI's bytes as XAPI exports them. */
async function exported(conn: XenConnection, vdi: string): Promise<Buffer> {
  const response = await conn.get('/export_raw_vdi', { vdi, format: 'raw' });
  const chunks: Buffer[] = [];
  for await (const chunk of response) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

describe('ABD pull: the target appliance fetches from the source appliance', () => {
  it('full then incremental: the replica VDI equals each snapshot, only differing blocks cross; the cache warning', async () => {
    const [src, dst] = [site[0]!, site[1]!];
    const size = 6 * MiB;
    const vm = await src.pool.makeVM('web', [size]);
    const diskId = (await hv.getVM(vm.uuid)).disks[0]!.id;
    await src.pool.writeGuest(vm.uuid, diskId, 0, randomBytes(3 * MiB + 100));
    const replicaVdi = await dst.pool.makeVdi(size);
    const warnings: string[] = [];

    const runOnce = async (label: string) => {
      const snapshot = await hv.snapshot(vm.uuid, label);
      const snapVdi = await src.pool.call<string>('VDI.get_by_uuid', String(snapshot.disks[0]!.meta?.vdi));
      const source = await AbdLease.acquire(src.conn, { ips: src.pool.ips, srs: [] });
      const target = await AbdLease.acquire(dst.conn, { ips: dst.pool.ips, srs: [] });
      try {
        const result = await pullVdiThroughAbd(
          target,
          await target.plug(replicaVdi.ref, 'RW'),
          source,
          await source.plug(snapVdi, 'RO'),
          { blockSize: MiB, replicationCache: true, onWarning: (m) => warnings.push(m) },
        );
        await target.release();
        await source.release();
        expect(Buffer.compare(await exported(dst.conn, replicaVdi.ref), await exported(src.conn, snapVdi))).toBe(0);
        return result;
      } finally {
        await target.release();
        await source.release();
        await hv.deleteSnapshot(snapshot);
      }
    };

    const full = await runOnce('one');
    expect(full).toMatchObject({ blocks: 6, copied: 4, bytesRead: 4 * MiB });
    await src.pool.writeGuest(vm.uuid, diskId, 5 * MiB + 10, randomBytes(10));
    const incremental = await runOnce('two');
    expect(incremental).toMatchObject({ blocks: 6, copied: 1, bytesRead: MiB });
    expect(warnings[0]).toMatch(/^cache-ignored-for-pull: /);
    for (const { pool } of site) {
      expect(await pool.applianceVbds()).toEqual([]);
      expect((await pool.appliances()).map((a) => a.power)).toEqual(['Halted']);
    }
  });
});
