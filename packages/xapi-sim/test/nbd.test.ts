import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RawNbd } from './helpers/nbd-client.js';
import { makeVm, type SimFixture, startSim } from './helpers/sim-fixture.js';
import { pattern, tool, toolOk } from './helpers/tools.js';

const MiB = 1024 * 1024;

interface NbdInfo {
  exportname: string;
  address: string;
  port: number;
  cert: string;
  subject: string;
}

// qemu-img 7.2 cannot be the peer here, as it cannot read from a real xapi-nbd either: when
// NBD_OPT_GO is unsupported it sends NBD_OPT_LIST, which xapi-nbd answers with POLICY, and qemu
// gives up ("Denied by server for option 3 (list)"). libnbd falls back to EXPORT_NAME directly.
describe('NBD like xapi-nbd', () => {
  let fx: SimFixture;
  let vdi: string;
  let info: NbdInfo;
  beforeEach(async () => {
    fx = await startSim({ nbd: true });
    const refs = await makeVm(fx, 'nbd', 5 * MiB);
    vdi = refs.vdi;
    await fx.call('VM.start', refs.vm, false, false);
    await fx.sim.guestWrite(refs.vm, '0', 0, pattern(3 * MiB + 512, 9));
    await fx.sim.guestWrite(refs.vm, '0', 4 * MiB, pattern(4096, 10));
    const infos = await fx.call<NbdInfo[]>('VDI.get_nbd_info', vdi);
    expect(infos).toHaveLength(1);
    info = infos[0]!;
  });
  afterEach(async () => {
    await fx.close();
  });

  it('get_nbd_info names the export, the caller session and the host certificate', async () => {
    const uuid = await fx.call<string>('VDI.get_uuid', vdi);
    expect(info.exportname).toBe(`/${uuid}?session_id=${fx.session}`);
    expect(info.address).toBe('127.0.0.1');
    expect(info.cert).toMatch(/^-----BEGIN CERTIFICATE-----/);
    expect(info.subject).toBe('xapi-sim');
  });

  /** The libnbd URI of an export (the export name itself starts with '/' and holds '?' and '='). */
  const uri = (scheme: 'nbd' | 'nbds') =>
    `${scheme}://${info.address}:${info.port}/${encodeURIComponent(info.exportname)}` +
    (scheme === 'nbds' ? `?tls-certificates=${fx.sim.tls!.dir}` : '');

  it('nbdcopy reads the VDI over STARTTLS (verifying the host certificate) and the bytes equal the VDI file', async () => {
    const out = join(fx.dir, 'nbd.raw');
    await writeFile(out, '');
    await toolOk('nbdcopy', [uri('nbds'), out]);
    expect((await readFile(out)).equals(await readFile(fx.sim.vdiPath(vdi)))).toBe(true);
    // the per-connection dom0 VBD is gone once nbdcopy has disconnected
    expect(await fx.call('VDI.get_VBDs', vdi)).toHaveLength(1);
    const shown = await toolOk('nbdinfo', [uri('nbds')]);
    expect(shown).toMatch(/is_read_only: true/);
    expect(shown).toMatch(/can_multi_conn: false/);
  });

  it('a client that skips STARTTLS is refused, and nbdinfo without TLS fails', async () => {
    const c = await RawNbd.open(info.port);
    expect((await c.read(18))?.subarray(0, 16).toString('latin1')).toBe('NBDMAGICIHAVEOPT');
    c.write(Buffer.from([0, 0, 0, 1]));
    c.option(7, Buffer.alloc(6)); // NBD_OPT_GO
    expect(await c.reply()).toEqual({ option: 7, type: 0x80000005 });
    c.option(1, Buffer.from(info.exportname)); // NBD_OPT_EXPORT_NAME in clear: the server hangs up
    expect(await c.closedByServer()).toBe(true);

    const plain = await tool('nbdinfo', [uri('nbd')]);
    expect(plain.code).not.toBe(0);
  });

  it('after STARTTLS: EXPORT_NAME only, 124 zero bytes, read-only, 512-aligned reads', async () => {
    const c = await RawNbd.open(info.port);
    await c.read(18);
    c.write(Buffer.from([0, 0, 0, 1]));
    c.option(5);
    expect(await c.reply()).toEqual({ option: 5, type: 1 });
    await c.startTls();
    c.option(7, Buffer.alloc(6));
    expect(await c.reply()).toEqual({ option: 7, type: 0x80000001 }); // GO unsupported
    c.option(3);
    expect(await c.reply()).toEqual({ option: 3, type: 0x80000002 }); // LIST: policy
    c.option(1, Buffer.from(info.exportname));
    const hello = (await c.read(134))!;
    expect(hello.readBigUInt64BE(0)).toBe(BigInt(5 * MiB));
    expect(hello.readUInt16BE(8)).toBe(3);
    expect(hello.subarray(10).equals(Buffer.alloc(124))).toBe(true);

    expect((await c.request(0, 1, 512)).error).toBe(22);
    expect((await c.request(0, 0, 100)).error).toBe(22);
    expect((await c.request(0, 0, 512, 1)).error).toBe(22); // a command flag makes the command unknown
    const ok = await c.request(0, 4 * MiB, 4096);
    expect(ok).toEqual({ error: 0, handle: 42n });
    expect((await c.read(4096))!.equals(pattern(4096, 10))).toBe(true);
    const w = Buffer.alloc(28);
    w.writeUInt32BE(0x25609513, 0);
    w.writeUInt16BE(1, 6);
    w.writeUInt32BE(512, 24);
    c.write(Buffer.concat([w, Buffer.alloc(512)]));
    expect((await c.read(16))!.readUInt32BE(4)).toBe(1); // EPERM: read-only
    // while the connection is open, the VDI is attached to dom0 and cannot be destroyed
    await expect(fx.call('VDI.destroy', vdi)).rejects.toMatchObject({ xapiCode: 'VDI_IN_USE' });
  });

  it('a client that dies while replies are queued (it stopped reading) still frees its dom0 VBD', async () => {
    const c = await RawNbd.open(info.port);
    await c.read(18);
    c.write(Buffer.from([0, 0, 0, 1]));
    c.option(5);
    await c.reply();
    await c.startTls();
    c.option(1, Buffer.from(info.exportname));
    await c.read(134);
    c.socket.pause(); // read nothing more: the server's replies back up until it waits to drain
    const r = Buffer.alloc(28);
    r.writeUInt32BE(0x25609513, 0);
    r.writeUInt32BE(4 * MiB, 24);
    for (let i = 0; i < 64; i++) c.write(r);
    const vbds = () => fx.call<string[]>('VDI.get_VBDs', vdi);
    for (let i = 0; i < 100 && (await vbds()).length < 2; i++) await new Promise((w) => setTimeout(w, 20));
    expect(await vbds()).toHaveLength(2);
    await new Promise((w) => setTimeout(w, 200)); // let the server fill the socket and wait on it
    c.socket.destroy();
    for (let i = 0; i < 250 && (await vbds()).length > 1; i++) await new Promise((w) => setTimeout(w, 20));
    expect(await vbds()).toHaveLength(1);
  });
});
