import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { makeVm, type SimFixture, startSim } from './helpers/sim-fixture.js';
import { toolOk } from './helpers/tools.js';

const MiB = 1024 * 1024;

describe('the NBD server counts what it serves; an SR may round VDI sizes up', () => {
  let fx: SimFixture | undefined;
  afterEach(async () => {
    await fx?.close();
    fx = undefined;
  });

  it('nbdStats counts the bytes, reads and 64 KiB blocks served per export, and resets', async () => {
    fx = await startSim({ nbd: true });
    const { vdi } = await makeVm(fx, 'counted', 3 * MiB);
    const uuid = await fx.call<string>('VDI.get_uuid', vdi);
    expect(fx.sim.nbdStats.of(uuid)).toEqual({ bytes: 0, reads: 0, blocks: 0 });
    const [info] = await fx.call<Array<{ exportname: string; port: number }>>('VDI.get_nbd_info', vdi);
    const out = join(fx.dir, 'copy.raw');
    await writeFile(out, '');
    const uri = `nbds://127.0.0.1:${info!.port}/${encodeURIComponent(info!.exportname)}?tls-certificates=${fx.sim.tls!.dir}`;
    await toolOk('nbdcopy', [uri, out]);
    const served = fx.sim.nbdStats.of(uuid);
    expect(served.bytes).toBe(3 * MiB); // nbdcopy reads the whole export once
    expect(served.blocks).toBe(48);
    expect(served.reads).toBeGreaterThan(0);
    expect(fx.sim.nbdStats.total().bytes).toBe(3 * MiB);
    fx.sim.nbdStats.reset();
    expect(fx.sim.nbdStats.of(uuid).bytes).toBe(0);
  });

  it('vdiSizeStep rounds VDI.create up (as an SR does); the default keeps sizes exact', async () => {
    fx = await startSim({ vdiSizeStep: 2 * MiB });
    const odd = await fx.call<string>('VDI.create', {
      SR: fx.sim.refs.sr,
      virtual_size: 5 * MiB + 777,
      type: 'user',
    });
    expect(Number(await fx.call('VDI.get_virtual_size', odd))).toBe(6 * MiB);
    await fx.close();
    fx = await startSim();
    const exact = await fx.call<string>('VDI.create', {
      SR: fx.sim.refs.sr,
      virtual_size: 5 * MiB + 777,
      type: 'user',
    });
    expect(Number(await fx.call('VDI.get_virtual_size', exact))).toBe(5 * MiB + 777);
  });
});
