import { randomBytes } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AbdLease, openAbdVdiSink, type XenConnection } from '../src/index.js';
import { type AbdPool, startAbdPool } from './helpers/abd-pool.js';

/*
 * Issue 17, ABD method: bytes written into a replica VDI plugged into the target appliance,
 * through its agent (a real replikit-agent process), read back equal through XAPI's own export.
 */

const MiB = 1024 * 1024;
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

/** The VDI's bytes as XAPI exports them (`/export_raw_vdi?format=raw`). */
async function exported(vdi: string): Promise<Buffer> {
  const response = await conn.get('/export_raw_vdi', { vdi, format: 'raw' });
  const chunks: Buffer[] = [];
  for await (const chunk of response) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

describe('writes through the target appliance (VdiSink over the agent)', () => {
  it('whole blocks, a block written in two pieces, a short last block and zeroes land in the VDI, equal when XAPI exports it', async () => {
    const size = 5 * MiB + 512 * 1024; // the last 1 MiB block is short
    const vdi = await pool.makeVdi(size);
    const lease = await AbdLease.acquire(conn, { ips: pool.ips, srs: [] });
    try {
      const plugged = await lease.plug(vdi.ref, 'RW');
      // The VDI holds data first: the zeroes below must clear it.
      const first = await openAbdVdiSink(lease, plugged, { blockSize: MiB });
      await first.write(0, randomBytes(5 * MiB + 512 * 1024));
      await first.close();

      const expected = Buffer.alloc(size);
      const a = randomBytes(2 * MiB);
      const b = randomBytes(MiB);
      const tail = randomBytes(512 * 1024);
      const sink = await openAbdVdiSink(lease, plugged, { blockSize: MiB });
      await sink.write(0, a);
      a.copy(expected, 0);
      await sink.write(2 * MiB, b.subarray(0, 300_000));
      await sink.write(2 * MiB + 300_000, b.subarray(300_000));
      b.copy(expected, 2 * MiB);
      await sink.writeZeroes(3 * MiB, 2 * MiB);
      await sink.flush();
      await sink.write(5 * MiB, tail);
      tail.copy(expected, 5 * MiB);
      // Out of order, or a block started in its middle: refused, nothing sent.
      await expect(sink.write(MiB, b)).rejects.toMatchObject({ code: 'E_INPUT' });
      await sink.close();
      await sink.close();
      await lease.unplug(plugged);
      expect(Buffer.compare(await exported(vdi.ref), expected)).toBe(0);
    } finally {
      await lease.release();
    }
    expect(await pool.applianceVbds()).toEqual([]);
  });

  it('a VDI plugged read-only is refused before anything is sent; an unplugged one by the agent', async () => {
    const vdi = await pool.makeVdi(MiB);
    const lease = await AbdLease.acquire(conn, { ips: pool.ips, srs: [] });
    try {
      const ro = await lease.plug(vdi.ref, 'RO');
      await expect(openAbdVdiSink(lease, ro)).rejects.toMatchObject({ code: 'E_INPUT' });
      await lease.unplug(ro);
      const rw = await lease.plug(vdi.ref, 'RW');
      const sink = await openAbdVdiSink(lease, rw, { blockSize: MiB });
      await lease.unplug(rw);
      await expect(
        (async () => {
          await sink.write(0, randomBytes(MiB));
          await sink.flush();
        })(),
      ).rejects.toMatchObject({ message: expect.stringMatching(/not plugged/) });
      await sink.abort();
    } finally {
      await lease.release();
    }
    expect(Buffer.compare(await exported(vdi.ref), Buffer.alloc(MiB))).toBe(0);
  });
});
