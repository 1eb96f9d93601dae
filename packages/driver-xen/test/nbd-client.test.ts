import { readFile } from 'node:fs/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { NbdConnection, NbdExport } from '../src/index.js';
import { startCuttingProxy } from './helpers/cutting-proxy.js';
import { startPool, type TestPool } from './helpers/xen-pool.js';

const MiB = 1024 * 1024;

/** A VM disk written with a pattern; returns the endpoint of its snapshot's NBD export. */
async function exportedDisk(pool: TestPool, size: number) {
  const vm = await pool.makeVM('nbd', [size]);
  const vbd = (await pool.call<string[]>('VM.get_VBDs', vm.ref))[0]!;
  const vdi = await pool.call<string>('VBD.get_VDI', vbd);
  const data = new Uint8Array(size);
  for (let i = 0; i < size; i += 4096) data.fill(((i / 4096) % 251) + 1, i, Math.min(size, i + 4096));
  await pool.sim.guestWrite(vm.ref, '0', 0, data);
  const info = (await pool.call<Array<Record<string, unknown>>>('VDI.get_nbd_info', vdi))[0]!;
  const expected = await readFile(pool.sim.vdiPath(vdi));
  return {
    endpoint: {
      host: String(info.address),
      port: Number(info.port),
      exportName: String(info.exportname),
      cert: String(info.cert),
    },
    expected: new Uint8Array(expected.buffer, expected.byteOffset, size),
  };
}

describe('our NBD client against the simulator (xapi-nbd behaviour)', () => {
  let pool: TestPool;
  beforeEach(async () => {
    pool = await startPool();
  });
  afterEach(async () => {
    await pool.close();
  });

  it('negotiates STARTTLS and EXPORT_NAME and reads the export byte for byte, over several connections', async () => {
    const { endpoint, expected } = await exportedDisk(pool, 8 * MiB);
    const nbd = await NbdExport.open(endpoint, { connections: 3, maxRequest: 256 * 1024 });
    try {
      expect(nbd.size).toBe(8 * MiB);
      const whole = new Uint8Array(8 * MiB);
      await nbd.readInto(0, whole); // 32 requests over 3 connections, in flight together
      expect(Buffer.compare(whole, expected)).toBe(0);
      // unaligned offsets and lengths: aligned on the wire (the server answers EINVAL otherwise)
      for (const [offset, length] of [
        [1, 1],
        [511, 2],
        [4095, 70_001],
        [8 * MiB - 513, 513],
      ] as const) {
        const part = new Uint8Array(length);
        await nbd.readInto(offset, part);
        expect(Buffer.compare(part, expected.subarray(offset, offset + length)), `${offset}+${length}`).toBe(0);
      }
    } finally {
      nbd.close();
    }
  });

  it('refuses a certificate other than the one XAPI reported', async () => {
    const { endpoint } = await exportedDisk(pool, MiB);
    const other = endpoint.cert.replace(/[A-Za-z](?=[A-Za-z0-9+/]{20}\n)/, (c) => (c === 'A' ? 'B' : 'A'));
    await expect(NbdConnection.open({ ...endpoint, cert: other })).rejects.toMatchObject({ code: 'E_AUTH' });
  });

  it('fails cleanly on an export name the server does not know', async () => {
    const { endpoint } = await exportedDisk(pool, MiB);
    await expect(
      NbdConnection.open({
        ...endpoint,
        exportName: endpoint.exportName.replace(/session_id=.*/, 'session_id=OpaqueRef:nope'),
      }),
    ).rejects.toMatchObject({ code: 'E_TRANSPORT' });
  });

  it('reconnects and retries when a connection drops in the middle of an export', async () => {
    const { endpoint, expected } = await exportedDisk(pool, 8 * MiB);
    const proxy = await startCuttingProxy(endpoint.port, 3 * MiB);
    try {
      const nbd = await NbdExport.open(
        { ...endpoint, port: proxy.port },
        { connections: 2, maxRequest: MiB, retry: { baseDelayMs: 1 } },
      );
      try {
        const whole = new Uint8Array(8 * MiB);
        await nbd.readInto(0, whole);
        expect(proxy.cuts()).toBe(1);
        expect(nbd.reconnects).toBeGreaterThanOrEqual(1);
        expect(Buffer.compare(whole, expected)).toBe(0);
      } finally {
        nbd.close();
      }
    } finally {
      await proxy.close();
    }
  });
});
