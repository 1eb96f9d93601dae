import type { Replica, ReplicaSpec } from '@replikit/core';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { XenDriver } from '../src/index.js';
import { startPool, type TestPool } from './helpers/xen-pool.js';

const MiB = 1024 * 1024;

describe('the xen replica fingerprint (CBT on the replica VDIs against the newest restore point)', () => {
  let pool: TestPool;
  let hv: XenDriver;
  let replica: Replica;
  beforeEach(async () => {
    pool = await startPool();
    hv = await pool.driver();
    const vm = await pool.makeVM('fp', [4 * MiB]);
    const source = await hv.getVM(vm.uuid);
    const spec: ReplicaSpec = {
      name: 'job-fp',
      source,
      disks: source.disks.map((d) => ({ sourceDiskId: d.id, size: d.size })),
    };
    replica = await hv.ensureReplica(spec);
    // A run: writes into the pending clone, the commit, the ready mark.
    const writer = await hv.openWriter(replica, replica.disks[0]!, { runId: 'run-1' });
    await writer.write(MiB + 3, new Uint8Array(70_000).fill(7));
    await writer.close();
    await hv.createRestorePoint(replica, 'run-1');
    await hv.markReplica(replica, 'ready');
  });
  afterEach(async () => {
    await hv.close();
    await pool.close();
  });

  const liveVdi = async () => {
    const vm = await pool.call<string>('VM.get_by_uuid', replica.id);
    const [vbd] = await pool.call<string[]>('VM.get_VBDs', vm);
    return pool.call<string>('VBD.get_VDI', vbd);
  };

  it("replikit's own writes, committed, leave the disk clean; the value is stable", async () => {
    const a = await hv.replicaState(replica);
    expect((a.details as { disks: Array<{ changes: string }> }).disks.map((d) => d.changes)).toEqual(['clean']);
    expect((await hv.replicaState(replica)).value).toBe(a.value);
  });

  it('a started replica is fingerprinted at once: its in-use disk is not retried as if it were busy', async () => {
    // XAPI answers VDI_IN_USE to list_changed_blocks while the VM runs: that is the answer, not
    // a transient. Retrying it with backoff made every fingerprint of a booted replica take 16 s.
    const before = await hv.replicaState(replica);
    await hv.power(replica.id, 'start');
    const calls = vi.spyOn(pool.sim.state, 'call');
    const booted = await hv.replicaState(replica);
    const asked = calls.mock.calls.filter(([method]) => method === 'VDI.list_changed_blocks').length;
    calls.mockRestore();
    expect(booted.value).not.toBe(before.value);
    expect((booted.details as { disks: Array<{ changes: string }> }).disks[0]!.changes).toBe('broken:VDI_IN_USE');
    expect(asked).toBe(1);
    await hv.power(replica.id, 'shutdown');
  });

  it('a write outside replikit (PUT /import_raw_vdi into the committed VDI) changes the value', async () => {
    const before = await hv.replicaState(replica);
    await pool.writeReplicaOutside(hv, replica, replica.disks[0]!.id, 3 * MiB, new Uint8Array(512).fill(1));
    const after = await hv.replicaState(replica);
    expect(after.value).not.toBe(before.value);
    expect((after.details as { disks: Array<{ changes: string }> }).disks[0]!.changes).toMatch(/^changed:/);
  });

  it('a CBT reset on the replica disk (disable, enable) changes the value', async () => {
    const before = await hv.replicaState(replica);
    const vdi = await liveVdi();
    await pool.call('VDI.disable_cbt', vdi);
    await pool.call('VDI.enable_cbt', vdi);
    expect((await hv.replicaState(replica)).value).not.toBe(before.value);
  });

  it('CBT turned off on the replica disk changes the value', async () => {
    const before = await hv.replicaState(replica);
    await pool.call('VDI.disable_cbt', await liveVdi());
    expect((await hv.replicaState(replica)).value).not.toBe(before.value);
  });

  it('after a revertTo, a write outside replikit still changes the value; deleteReplica leaves no VDI', async () => {
    const [point] = await hv.listRestorePoints(replica);
    await hv.revertTo(replica, point!);
    const reverted = await hv.replicaState(replica);
    expect((await hv.replicaState(replica)).value).toBe(reverted.value);
    expect((reverted.details as { disks: Array<{ changes: string }> }).disks.map((d) => d.changes)).toEqual(['clean']);
    await pool.writeReplicaOutside(hv, replica, replica.disks[0]!.id, 2 * MiB, new Uint8Array(512).fill(4));
    expect((await hv.replicaState(replica)).value).not.toBe(reverted.value);
    const before = Object.values(await pool.call<Record<string, object>>('VDI.get_all_records')).length;
    await hv.deleteReplica(replica);
    const after = Object.values(await pool.call<Record<string, object>>('VDI.get_all_records')).length;
    expect(before - after).toBe(3); // the live disk, the point's disk, and the reverted disk's CBT base
  });

  it('the next run commits again and the disk is clean again', async () => {
    await pool.writeReplicaOutside(hv, replica, replica.disks[0]!.id, 0, new Uint8Array(512).fill(2));
    const writer = await hv.openWriter(replica, replica.disks[0]!, { runId: 'run-2' });
    await writer.write(0, new Uint8Array(512).fill(3));
    await writer.close();
    await hv.createRestorePoint(replica, 'run-2');
    await hv.markReplica(replica, 'ready');
    const state = await hv.replicaState(replica);
    expect((state.details as { disks: Array<{ changes: string }> }).disks.map((d) => d.changes)).toEqual(['clean']);
  });
});
