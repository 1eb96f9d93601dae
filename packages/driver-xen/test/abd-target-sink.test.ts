import { randomBytes } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AbdLease, emptyAbdWriteStats, openAbdTargetSink, type XenConnection } from '../src/index.js';
import { type AbdPool, startAbdPool } from './helpers/abd-pool.js';

/*
 * Issue 17, ABD target: the sink a replica writer gets takes the engine's writes in any order and
 * at any offset; a block written in part is completed from the VDI through the same appliance.
 * What XAPI exports afterwards equals the bytes written over what was there.
 */

const KiB = 1024;
const MiB = 1024 * KiB;
let pool: AbdPool;
let conn: XenConnection;

beforeEach(async () => {
  pool = await startAbdPool();
  conn = await pool.connect();
});
afterEach(async () => {
  await conn.close();
  await pool.close();
});

async function exported(vdi: string): Promise<Buffer> {
  const response = await conn.get('/export_raw_vdi', { vdi, format: 'raw' });
  const chunks: Buffer[] = [];
  for await (const chunk of response) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

describe('the ABD target sink (any order, any offset)', () => {
  it('descending, scattered, unaligned writes and zeroes land over the old bytes; only touched blocks are sent', async () => {
    const size = 2 * MiB + 100 * KiB; // a short last 64 KiB block
    const vdi = await pool.makeVdi(size);
    const lease = await AbdLease.acquire(conn, { ips: pool.ips, srs: [] });
    const expected = randomBytes(size);
    try {
      const plugged = await lease.plug(vdi.ref, 'RW');
      const first = await openAbdTargetSink(lease, plugged);
      await first.write(0, expected);
      await first.close();

      const stats = emptyAbdWriteStats();
      const sink = await openAbdTargetSink(lease, plugged, { stats });
      const put = async (offset: number, bytes: Buffer) => {
        await sink.write(offset, bytes);
        bytes.copy(expected, offset);
      };
      await put(MiB, randomBytes(64 * KiB)); // a whole block
      await put(128 * KiB, randomBytes(64 * KiB)); // below it: a new stream
      await put(4095, randomBytes(300)); // inside block 0, read-modify-write
      await put(4095 + 300, randomBytes(70_000)); // continues it, across into block 1
      await put(size - 10, randomBytes(10)); // the disk's last bytes
      await sink.writeZeroes(5000, 200 * KiB); // partial head, whole blocks, partial tail
      expected.fill(0, 5000, 5000 + 200 * KiB);
      await put(MiB + 10, randomBytes(20)); // a block written earlier in this sink
      await sink.flush();
      await sink.close();
      await lease.unplug(plugged);
      expect(Buffer.compare(await exported(vdi.ref), expected)).toBe(0);
      // Blocks 0, 1, 2, 3 (zero head/tail), 16, 16 again, 34: never the whole disk.
      expect(stats.dataBytes).toBeLessThan(12 * 64 * KiB);
      expect(stats.readModifyWrites).toBeGreaterThan(0);
    } finally {
      await lease.release();
    }
    expect(await pool.applianceVbds()).toEqual([]);
  });

  it('a read-only plug is refused with E_INPUT; a range past the disk with E_INPUT', async () => {
    const vdi = await pool.makeVdi(MiB);
    const lease = await AbdLease.acquire(conn, { ips: pool.ips, srs: [] });
    try {
      const ro = await lease.plug(vdi.ref, 'RO');
      await expect(openAbdTargetSink(lease, ro)).rejects.toMatchObject({ code: 'E_INPUT' });
      await lease.unplug(ro);
      const rw = await lease.plug(vdi.ref, 'RW');
      const sink = await openAbdTargetSink(lease, rw);
      await expect(sink.write(MiB - 1, new Uint8Array(2))).rejects.toMatchObject({ code: 'E_INPUT' });
      await sink.abort();
      await lease.unplug(rw);
    } finally {
      await lease.release();
    }
  });
});
