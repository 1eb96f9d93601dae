import { createReadStream } from 'node:fs';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { convertXvaToDisk, readXvaFileHeader } from '@replikit/formats';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Xapi } from 'xen-api';
import { connectClient, makeVm, type SimFixture, startSim } from './helpers/sim-fixture.js';
import { pattern, toolOk } from './helpers/tools.js';

const MiB = 1024 * 1024;

describe('XVA: GET /export and PUT /import through the real xen-api client', () => {
  let fx: SimFixture;
  let xapi: Xapi;
  beforeEach(async () => {
    fx = await startSim();
    xapi = await connectClient(fx.sim);
  });
  afterEach(async () => {
    await xapi.disconnect();
    await fx.close();
  });

  it('exports a halted VM whose disks read back byte for byte, and imports it as a new VM', async () => {
    const { vm, vdi } = await makeVm(fx, 'xva', 3 * MiB);
    const second = await fx.call<string>('VDI.create', { SR: fx.sim.refs.sr, virtual_size: 2 * MiB, type: 'user' });
    await fx.call('VBD.create', { VM: vm, VDI: second, userdevice: '1', mode: 'RW', type: 'Disk' });
    await fx.call('VM.start', vm, false, false);
    await fx.sim.guestWrite(vm, '0', 123, pattern(MiB + 5, 11));
    await fx.sim.guestWrite(vm, '1', MiB, pattern(4096, 12));
    // a running VM cannot be exported
    await expect(xapi.getResource('/export', { query: { ref: vm } })).rejects.toThrow('unexpected 500');
    await xapi.callAsync('VM.clean_shutdown', vm);

    const response = await xapi.getResource('/export', { query: { ref: vm } });
    expect(response.headers['content-disposition']).toBe('attachment; filename="export.xva"');
    const xva = join(fx.dir, 'vm.xva');
    await writeFile(xva, Buffer.from(await response.body.arrayBuffer()));
    await response.task;

    const header = await readXvaFileHeader(xva);
    expect(header.vm.name_label).toBe('xva');
    for (const [i, ref] of [vdi, second].entries()) {
      const out = join(fx.dir, `disk${i}.raw`);
      await convertXvaToDisk(xva, out, { to: 'raw', ref: header.vdis[i]!.ref, sync: false });
      await toolOk('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'raw', out, fx.sim.vdiPath(ref)]);
    }

    const size = (await stat(xva)).size;
    const imported = await xapi.putResource(Object.assign(createReadStream(xva), { length: size }), '/import', {
      query: { sr_id: fx.sim.refs.sr },
    });
    expect(Array.isArray(imported)).toBe(true);
    const newVm = (imported as string[])[0]!;
    expect(newVm).not.toBe(vm);
    expect(await fx.call('VM.get_name_label', newVm)).toBe('xva');
    expect(await fx.call('VM.get_power_state', newVm)).toBe('Halted');
    const vbds = await fx.call<string[]>('VM.get_VBDs', newVm);
    expect(vbds).toHaveLength(2);
    for (const vbd of vbds) {
      const copy = await fx.call<string>('VBD.get_VDI', vbd);
      const index = Number(await fx.call<string>('VBD.get_userdevice', vbd));
      const original = [vdi, second][index]!;
      expect((await readFile(fx.sim.vdiPath(copy))).equals(await readFile(fx.sim.vdiPath(original)))).toBe(true);
    }
  });
});
