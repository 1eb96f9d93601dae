import type { Extent, Snapshot } from '@replikit/core';
import { readWholeDisk } from '@replikit/core/testing';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { XenDriver } from '../src/index.js';
import { startPool, type TestPool } from './helpers/xen-pool.js';

const MiB = 1024 * 1024;
const HOSTILE = `web "it's" $(touch /tmp/rk-pwned) \`id\` \n; rm -rf / ${'x'.repeat(240)}`;

async function extentsOf(hv: XenDriver, disk: Snapshot['disks'][number], base: Snapshot, current: Snapshot) {
  const answer = await hv.changeTracker!.changes(disk, base, current);
  if (answer === undefined) return undefined;
  const out: Extent[] = [];
  for await (const e of answer) out.push({ ...e });
  return out;
}

describe('the xen source side against the simulator', () => {
  let pool: TestPool;
  let hv: XenDriver;
  beforeEach(async () => {
    pool = await startPool();
    hv = await pool.driver();
  });
  afterEach(async () => {
    await hv.close();
    await pool.close();
  });

  it('lists user VMs only: no templates, snapshots, dom0 or ABD appliances', async () => {
    const vm = await pool.makeVM('plain', [MiB]);
    await pool.call('VM.create', { name_label: 'a template', is_a_template: true });
    const abd = await pool.call<string>('VM.create', {
      name_label: 'appliance',
      other_config: { 'replikit:abd': '1' },
    });
    await hv.snapshot(vm.uuid, 'one');
    const names = (await hv.listVMs()).map((v) => v.name);
    expect(names).toEqual(['plain']);
    expect(await pool.call('VM.get_name_label', abd)).toBe('appliance');
  });

  it('tags its snapshots so that a new session (a resumed run) finds them by label', async () => {
    const vm = await pool.makeVM('tagged', [MiB, 2 * MiB]);
    const snap = await hv.snapshot(vm.uuid, 'replikit-run-1');
    const ref = await pool.call<string>('VM.get_by_uuid', snap.id);
    expect((await pool.call<Record<string, string>>('VM.get_other_config', ref))['replikit:snapshot']).toBe(
      'replikit-run-1',
    );
    const other = await pool.driver();
    try {
      const found = await other.listSnapshots(vm.uuid);
      expect(found.map((s) => s.label)).toEqual(['replikit-run-1']);
      expect(JSON.parse(JSON.stringify(found[0]))).toEqual(snap);
    } finally {
      await other.close();
    }
  });

  it('a VM with a hostile name snapshots and reads; the name reaches no path', async () => {
    const vm = await pool.makeVM(HOSTILE, [MiB]);
    const info = await hv.getVM(HOSTILE);
    expect(info.id).toBe(vm.uuid);
    await pool.writeGuest(vm.uuid, info.disks[0]!.id, 4096, new Uint8Array(100).fill(7));
    const snap = await hv.snapshot(vm.uuid, `label ${HOSTILE}`);
    const bytes = await readWholeDisk(hv, snap.disks[0]!);
    expect(bytes.subarray(4096, 4196).every((b) => b === 7)).toBe(true);
    for (const d of snap.disks) expect(JSON.stringify(d.meta)).not.toContain('touch');
  });

  it('reads the same bytes over NBD (its last partial sector over HTTP) and, with preferNbd: false, over /export_raw_vdi', async () => {
    const vm = await pool.makeVM('paths', [3 * MiB + 100]);
    const disk = (await hv.getVM(vm.uuid)).disks[0]!;
    const data = new Uint8Array(3 * MiB + 100).map((_, i) => (i * 7) % 253);
    await pool.writeGuest(vm.uuid, disk.id, 0, data);
    const snap = await hv.snapshot(vm.uuid, 'paths');
    const http = await pool.driver({ preferNbd: false });
    try {
      const viaNbd = await readWholeDisk(hv, snap.disks[0]!);
      const viaHttp = await readWholeDisk(http, snap.disks[0]!);
      expect(Buffer.compare(viaNbd, data)).toBe(0);
      expect(Buffer.compare(viaHttp, data)).toBe(0);
    } finally {
      await http.close();
    }
  });

  it('CBT: reports exactly the written 64 KiB blocks; keeps answering after deleteSnapshot({ keepMetadata })', async () => {
    const vm = await pool.makeVM('cbt', [8 * MiB]);
    const disk = (await hv.getVM(vm.uuid)).disks[0]!;
    const s1 = await hv.snapshot(vm.uuid, 's1');
    await pool.writeGuest(vm.uuid, disk.id, 65_535, new Uint8Array(2).fill(1)); // blocks 0 and 1
    await pool.writeGuest(vm.uuid, disk.id, 5 * MiB, new Uint8Array(10).fill(2)); // block 80
    const s2 = await hv.snapshot(vm.uuid, 's2');
    expect(await extentsOf(hv, s2.disks[0]!, s1, s2)).toEqual([
      { offset: 0, length: 131_072 },
      { offset: 5 * MiB, length: 65_536 },
    ]);
    await hv.deleteSnapshot(s1, { keepMetadata: true });
    await pool.writeGuest(vm.uuid, disk.id, 8 * MiB - 1, new Uint8Array(1).fill(3));
    const s3 = await hv.snapshot(vm.uuid, 's3');
    expect(await extentsOf(hv, s3.disks[0]!, s1, s3)).toEqual([
      { offset: 0, length: 131_072 },
      { offset: 5 * MiB, length: 65_536 },
      { offset: 8 * MiB - 65_536, length: 65_536 },
    ]);
    await expect(hv.openReader(s1.disks[0]!)).rejects.toMatchObject({ code: 'E_NOT_FOUND' });
    expect((await hv.listSnapshots(vm.uuid)).map((s) => s.label)).toEqual(['s2', 's3']);
  });

  it('CBT: a snapshot VDI still attached for another process\'s NBD reader (a killed run\'s) is waited for, not "cannot tell"', async () => {
    const vm = await pool.makeVM('attached', [4 * MiB]);
    const disk = (await hv.getVM(vm.uuid)).disks[0]!;
    const s1 = await hv.snapshot(vm.uuid, 's1');
    await pool.writeGuest(vm.uuid, disk.id, 3 * MiB, new Uint8Array(4).fill(5)); // block 48
    const s2 = await hv.snapshot(vm.uuid, 's2');
    // Another session reads the newer snapshot over NBD: the pool attaches its VDI to dom0 meanwhile.
    const other = await pool.driver();
    const reader = await other.openReader(s2.disks[0]!);
    await reader.read(0, 65_536);
    const vdi = await pool.call<string>('VDI.get_by_uuid', s2.disks[0]!.meta!.vdi as string);
    const attached = async () => {
      const vbds = await pool.call<string[]>('VDI.get_VBDs', vdi);
      return (await Promise.all(vbds.map((v) => pool.call<boolean>('VBD.get_currently_attached', v)))).some(Boolean);
    };
    expect(await attached()).toBe(true);
    const answer = extentsOf(hv, s2.disks[0]!, s1, s2);
    setTimeout(() => void reader.close().then(() => other.close()), 300);
    expect(await answer).toEqual([{ offset: 3 * MiB, length: 65_536 }]);
  });

  it('CBT: "cannot tell" (undefined) when CBT is off, was reset, or the base is lost', async () => {
    const off = await pool.makeVM('off', [MiB], { cbt: false });
    const a = await hv.snapshot(off.uuid, 'a');
    const b = await hv.snapshot(off.uuid, 'b');
    expect(await extentsOf(hv, b.disks[0]!, a, b)).toBeUndefined();

    const reset = await pool.makeVM('reset', [MiB]);
    const r1 = await hv.snapshot(reset.uuid, 'r1');
    const live = await pool.call<string>('VDI.get_by_uuid', r1.disks[0]!.id);
    await pool.call('VDI.disable_cbt', live);
    await pool.call('VDI.enable_cbt', live);
    const r2 = await hv.snapshot(reset.uuid, 'r2');
    expect(await extentsOf(hv, r2.disks[0]!, r1, r2)).toBeUndefined();

    const lost = await pool.makeVM('lost', [MiB]);
    const l1 = await hv.snapshot(lost.uuid, 'l1');
    const l2 = await hv.snapshot(lost.uuid, 'l2');
    expect(await extentsOf(hv, l2.disks[0]!, l1, l2)).toEqual([]);
    await hv.deleteSnapshot(l1); // data and CBT log gone
    expect(await extentsOf(hv, l2.disks[0]!, l1, l2)).toBeUndefined();
  });

  it('pending (for `replikit plan`) takes no snapshot: a running VM answers "cannot tell", a halted one its CBT blocks', async () => {
    const vm = await pool.makeVM('plan', [4 * MiB]); // makeVM starts it
    const base = await hv.snapshot(vm.uuid, 'base');
    const disk = (await hv.getVM(vm.uuid)).disks[0]!;
    await pool.writeGuest(vm.uuid, disk.id, 2 * MiB + 5, new Uint8Array(10).fill(1));
    const vdis = async () => Object.keys(await pool.call<Record<string, object>>('VDI.get_all_records')).length;
    const before = await vdis();
    expect(await hv.changeTracker!.pending!(disk, base)).toBeUndefined(); // attached: VDI_IN_USE
    expect(await vdis()).toBe(before); // no probe snapshot was taken
    await pool.call('VM.hard_shutdown', vm.ref);
    const extents: Extent[] = [];
    for await (const e of (await hv.changeTracker!.pending!(disk, base))!) extents.push({ ...e });
    expect(extents).toEqual([{ offset: 2 * MiB, length: 64 * 1024 }]);
    expect(await vdis()).toBe(before);
  });

  it('deleteSnapshot leaves no snapshot VM, VBD or VDI behind', async () => {
    const vm = await pool.makeVM('clean', [MiB, MiB]);
    const count = async () => ({
      vms: Object.keys(await pool.call<object>('VM.get_all_records')).length,
      vbds: Object.keys(await pool.call<object>('VBD.get_all_records')).length,
      vdis: Object.keys(await pool.call<object>('VDI.get_all_records')).length,
    });
    const before = await count();
    const snap = await hv.snapshot(vm.uuid, 'temp');
    const reader = await hv.openReader(snap.disks[1]!);
    await reader.read(0, 4096);
    await reader.close();
    await hv.deleteSnapshot(snap);
    expect(await count()).toEqual(before);
  });
});

describe('the raw HTTP export as a fallback', () => {
  it('over /export_raw_vdi, reads in flight at once (as the engine issues them) each get their own bytes', async () => {
    // One export stream serves every read of the reader: reads that overlap in time must not
    // interleave on it (the XenServer ► Hyper-V demo's replica got blocks at the wrong offsets).
    const pool = await startPool({ nbd: false });
    const http = await pool.driver();
    try {
      const vm = await pool.makeVM('concurrent', [4 * MiB]);
      const disk = (await http.getVM(vm.uuid)).disks[0]!;
      const data = new Uint8Array(4 * MiB).map((_, i) => (i * 31 + (i >> 16)) % 249);
      await pool.writeGuest(vm.uuid, disk.id, 0, data);
      const snap = await http.snapshot(vm.uuid, 'concurrent');
      const reader = await http.openReader(snap.disks[0]!);
      const block = 64 * 1024;
      const offsets = Array.from({ length: (4 * MiB) / block }, (_, i) => i * block);
      const [forward, skipping] = [offsets, offsets.filter((_, i) => i % 3 !== 1)];
      for (const wanted of [forward, skipping]) {
        const got = await Promise.all(wanted.map((offset) => reader.read(offset, block)));
        for (const [i, offset] of wanted.entries()) {
          expect(Buffer.compare(got[i]!, data.subarray(offset, offset + block)), `block at ${offset}`).toBe(0);
        }
      }
      await reader.close();
    } finally {
      await http.close();
      await pool.close();
    }
  });

  it('an export cut mid-stream is opened again and the read completes with the right bytes', async () => {
    const pool = await startPool({ nbd: false });
    const hv = await pool.driver();
    try {
      const vm = await pool.makeVM('cut', [4 * MiB]);
      const disk = (await hv.getVM(vm.uuid)).disks[0]!;
      const data = new Uint8Array(4 * MiB).map((_, i) => (i * 13) % 251);
      await pool.writeGuest(vm.uuid, disk.id, 0, data);
      const snap = await hv.snapshot(vm.uuid, 'cut');
      pool.sim.faults.dropNextExportAfter = 2.5 * MiB;
      const bytes = await readWholeDisk(hv, snap.disks[0]!);
      expect(pool.sim.faults.dropNextExportAfter).toBeUndefined(); // the fault fired
      expect(Buffer.compare(bytes, data)).toBe(0);
    } finally {
      await hv.close();
      await pool.close();
    }
  });
});
