import { readFile, stat } from 'node:fs/promises';
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { makeVm, type SimFixture, startSim } from './helpers/sim-fixture.js';

const KIB64 = 64 * 1024;
const failure = (p: Promise<unknown>) =>
  p.then(
    () => undefined,
    (e: { xapiCode?: string; params?: string[] }) => [e.xapiCode, ...(e.params ?? [])],
  );

/** Decodes XAPI's changed-block string independently of the simulator: MSB-first bits. */
function decodeChanged(b64: string): number[] {
  const bytes = Buffer.from(b64, 'base64');
  const blocks: number[] = [];
  for (let i = 0; i < bytes.length * 8; i++) if ((bytes[i >> 3]! >> (7 - (i % 8))) & 1) blocks.push(i);
  return blocks;
}

describe('storage: snapshots, clones and CBT', () => {
  let fx: SimFixture;
  beforeEach(async () => {
    fx = await startSim();
  });
  afterEach(async () => {
    await fx.close();
  });

  it('VM.snapshot takes every disk at one instant; VM.destroy leaves the VDIs', async () => {
    const { vm, vdi } = await makeVm(fx, 'two disks', 2 * 1024 * 1024);
    const second = await fx.call<string>('VDI.create', { SR: fx.sim.refs.sr, virtual_size: 1024 * 1024, type: 'user' });
    await fx.call('VBD.create', { VM: vm, VDI: second, userdevice: '1', mode: 'RW', type: 'Disk' });
    await fx.call('VM.start', vm, false, false);
    await fx.sim.guestWrite(vm, '0', 4096, Buffer.from('first disk'));
    await fx.sim.guestWrite(vm, '1', 0, Buffer.from('second disk'));
    const snap = await fx.call<string>('VM.snapshot', vm, 'snap');
    await fx.sim.guestWrite(vm, '0', 4096, Buffer.from('LATER WRITE'));
    const rec = await fx.call<Record<string, unknown>>('VM.get_record', snap);
    expect(rec).toMatchObject({ is_a_snapshot: true, is_a_template: true, snapshot_of: vm, blocked_operations: {} });
    expect(await fx.call('VM.get_snapshots', vm)).toEqual([snap]);
    const snapVdis = await Promise.all((rec.VBDs as string[]).map((vbd) => fx.call<string>('VBD.get_VDI', vbd)));
    expect(snapVdis).toHaveLength(2);
    for (const s of snapVdis) {
      expect(await fx.call('VDI.get_is_a_snapshot', s)).toBe(true);
      expect([vdi, second]).toContain(await fx.call('VDI.get_snapshot_of', s));
    }
    const origins = await Promise.all(snapVdis.map((s) => fx.call<string>('VDI.get_snapshot_of', s)));
    const snapOfFirst = snapVdis[origins.indexOf(vdi)]!;
    const bytes = await readFile(fx.sim.vdiPath(snapOfFirst));
    expect(bytes.subarray(4096, 4106).toString()).toBe('first disk');
    expect((await readFile(fx.sim.vdiPath(vdi))).subarray(4096, 4107).toString()).toBe('LATER WRITE');

    await fx.call('VM.hard_shutdown', vm);
    await fx.call('VM.destroy', snap);
    for (const s of snapVdis) expect((await stat(fx.sim.vdiPath(s))).size).toBeGreaterThan(0);
    expect(await fx.call('VDI.get_VBDs', snapVdis[0]!)).toEqual([]);
  });

  it('VDI.clone and VDI.copy give independent VDIs that are not snapshots', async () => {
    const { vm, vdi } = await makeVm(fx, 'src');
    await fx.call('VM.start', vm, false, false);
    await fx.sim.guestWrite(vm, '0', 0, Buffer.from('hello'));
    for (const [method, args] of [
      ['VDI.clone', [vdi, {}]],
      ['VDI.copy', [vdi, fx.sim.refs.sr]],
    ] as const) {
      const copy = await fx.call<string>(method, ...args);
      expect(await fx.call('VDI.get_is_a_snapshot', copy)).toBe(false);
      expect((await readFile(fx.sim.vdiPath(copy))).subarray(0, 5).toString()).toBe('hello');
    }
  });

  it('list_changed_blocks names exactly the 64 KiB blocks the guest wrote between two snapshots', async () => {
    const size = 8 * 1024 * 1024;
    const { vm, vdi } = await makeVm(fx, 'cbt', size);
    await fx.call('VDI.enable_cbt', vdi);
    await fx.call('VM.start', vm, false, false);
    const write = fc.record({
      offset: fc.integer({ min: 0, max: size - 1 }),
      length: fc.integer({ min: 1, max: 200_000 }),
    });
    await fc.assert(
      fc.asyncProperty(
        fc.array(write, { maxLength: 12 }),
        fc.array(write, { maxLength: 3 }),
        async (between, before) => {
          for (const w of before)
            await fx.sim.guestWrite(vm, '0', w.offset, Buffer.alloc(Math.min(w.length, size - w.offset), 1));
          const s1 = await fx.call<string>('VDI.snapshot', vdi, {});
          const expected = new Set<number>();
          for (const w of between) {
            const length = Math.min(w.length, size - w.offset);
            await fx.sim.guestWrite(vm, '0', w.offset, Buffer.alloc(length, 7));
            for (let k = Math.floor(w.offset / KIB64); k <= Math.floor((w.offset + length - 1) / KIB64); k++)
              expected.add(k);
          }
          const s2 = await fx.call<string>('VDI.snapshot', vdi, {});
          const changed = await fx.call<string>('VDI.list_changed_blocks', s1, s2);
          expect(Buffer.from(changed, 'base64').length).toBe(size / KIB64 / 8);
          expect(decodeChanged(changed)).toEqual([...expected].sort((a, b) => a - b));
          await fx.call('VDI.destroy', s1);
          await fx.call('VDI.destroy', s2);
        },
      ),
      { numRuns: 25 },
    );
  });

  it('data_destroy keeps the CBT log; disable/enable cuts the chain like XAPI', async () => {
    const { vm, vdi } = await makeVm(fx, 'cbt2', 1024 * 1024);
    await fx.call('VDI.enable_cbt', vdi);
    await fx.call('VM.start', vm, false, false);
    const s1 = await fx.call<string>('VDI.snapshot', vdi, {});
    await fx.sim.guestWrite(vm, '0', 3 * KIB64, Buffer.from('x'));
    const live = await fx.call<string>('VDI.snapshot', vdi, {});
    expect(await failure(fx.call('VDI.data_destroy', vdi))).toEqual(['VDI_NO_CBT_METADATA', vdi]);
    await fx.call('VDI.data_destroy', s1);
    expect(await fx.call('VDI.get_type', s1)).toBe('cbt_metadata');
    await expect(stat(fx.sim.vdiPath(s1))).rejects.toMatchObject({ code: 'ENOENT' });
    expect(decodeChanged(await fx.call<string>('VDI.list_changed_blocks', s1, live))).toEqual([3]);
    expect(await failure(fx.call('VDI.list_changed_blocks', s1, vdi))).toEqual([
      'VDI_IN_USE',
      vdi,
      'list_changed_blocks',
    ]);

    await fx.call('VDI.disable_cbt', vdi);
    await fx.call('VDI.enable_cbt', vdi);
    await fx.sim.guestWrite(vm, '0', 0, Buffer.from('y'));
    const s3 = await fx.call<string>('VDI.snapshot', vdi, {});
    expect(await failure(fx.call('VDI.list_changed_blocks', live, s3))).toEqual([
      'SR_BACKEND_FAILURE_460',
      '',
      'Failed to calculate changed blocks for given VDIs.',
      '',
    ]);
    expect((await failure(fx.call('VDI.list_changed_blocks', s1, s3)))?.[0]).toBe('SR_BACKEND_FAILURE_460');
    expect((await failure(fx.call('VDI.list_changed_blocks', s3, s3)))?.[0]).toBe('SR_BACKEND_FAILURE_460');
  });
});
