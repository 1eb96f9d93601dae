import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Xapi } from 'xen-api';
import { connectClient, makeVm, type SimFixture, startSim } from './helpers/sim-fixture.js';

const codeOf = (p: Promise<unknown>) =>
  p.then(
    () => ({ code: 'resolved', params: [] as string[] }),
    (e: { code?: string; params?: string[] }) => ({ code: e.code, params: e.params }),
  );

describe('faults on demand, seen through the real xen-api client', () => {
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

  it('fails the next task of a method with the error asked for', async () => {
    const { vm } = await makeVm(fx, 'f1');
    fx.sim.faults.failNext('VM.start', 'INTERNAL_ERROR', 'simulated failure');
    expect(await codeOf(xapi.callAsync('VM.start', vm, false, false))).toEqual({
      code: 'INTERNAL_ERROR',
      params: ['simulated failure'],
    });
    expect(await xapi.callAsync('VM.start', vm, false, false)).toBe('');
  });

  it('refuses new Async calls with TOO_MANY_PENDING_TASKS while the limit is reached', async () => {
    const { vm } = await makeVm(fx, 'f2');
    fx.sim.faults.pendingTaskLimit = 1;
    const release = fx.sim.hold('VM.start');
    const first = xapi.callAsync('VM.start', vm, false, false);
    expect(await codeOf(xapi.callAsync('VM.snapshot', vm, 'x'))).toEqual({
      code: 'TOO_MANY_PENDING_TASKS',
      params: [],
    });
    release();
    expect(await first).toBe('');
  });

  it('keeps a VDI in use after its VBD is unplugged until the race is released (XAPI/tapdisk race)', async () => {
    const { vm, vdi, vbd } = await makeVm(fx, 'f3');
    await xapi.callAsync('VM.start', vm, false, false);
    fx.sim.faults.unplugRace = true;
    await xapi.callAsync('VBD.unplug', vbd);
    expect(await codeOf(xapi.callAsync('VDI.destroy', vdi))).toEqual({ code: 'VDI_IN_USE', params: [vdi, 'destroy'] });
    fx.sim.faults.releaseUnplugged();
    expect(await xapi.callAsync('VDI.destroy', vdi)).toBe('');
  });

  it('drops an export mid-stream on demand: the body comes short and the task fails', async () => {
    const { vdi } = await makeVm(fx, 'f4', 4 * 1024 * 1024);
    fx.sim.faults.dropNextExportAfter = 1024 * 1024 + 17;
    const response = await xapi.getResource('/export_raw_vdi', { query: { vdi, format: 'raw' } });
    const body = await response.body.arrayBuffer().then(
      (b) => b.byteLength,
      () => -1,
    );
    expect(body).toBeLessThan(4 * 1024 * 1024);
    await expect(response.task).rejects.toMatchObject({ code: 'VDI_IO_ERROR' });
    // only the next export: the one after is whole
    const again = await xapi.getResource('/export_raw_vdi', { query: { vdi, format: 'raw' } });
    expect((await again.body.arrayBuffer()).byteLength).toBe(4 * 1024 * 1024);
  });

  it('still moves the right bytes over a slow link (the rate itself is not timed here)', async () => {
    const { vdi } = await makeVm(fx, 'f5', 1024 * 1024);
    fx.sim.faults.linkBytesPerSecond = 8 * 1024 * 1024;
    const data = Buffer.alloc(1024 * 1024, 0x5a);
    expect(await xapi.putResource(data, '/import_raw_vdi', { query: { vdi, format: 'raw' } })).toBe(vdi);
    const response = await xapi.getResource('/export_raw_vdi', { query: { vdi, format: 'raw' } });
    expect(Buffer.from(await response.body.arrayBuffer()).equals(data)).toBe(true);
  });

  it('refuses power operations on the control domain', async () => {
    expect(await codeOf(xapi.callAsync('VM.hard_shutdown', fx.sim.refs.dom0))).toMatchObject({
      code: 'OPERATION_NOT_ALLOWED',
    });
  });
});

describe('HTTPS', () => {
  it('the real client connects over https with allowUnauthorized only, and downloads a VDI', async () => {
    const fx = await startSim({ https: true });
    try {
      expect(fx.sim.url).toMatch(/^https:/);
      const xapi = await connectClient(fx.sim);
      const { vdi } = await makeVm(fx, 'tls', 1024 * 1024);
      const response = await xapi.getResource('/export_raw_vdi', { query: { vdi, format: 'raw' } });
      expect(Buffer.from(await response.body.arrayBuffer()).equals(Buffer.alloc(1024 * 1024))).toBe(true);
      await response.task;
      await xapi.disconnect();
    } finally {
      await fx.close();
    }
  });
});
