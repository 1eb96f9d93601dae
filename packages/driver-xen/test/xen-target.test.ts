import type { Replica, ReplicaSpec } from '@replikit/core';
import { readWholeDisk } from '@replikit/core/testing';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { XenDriver } from '../src/index.js';
import { startPool, type TestPool } from './helpers/xen-pool.js';

const MiB = 1024 * 1024;
const owner = (runId: string) => ({ runId, host: 'h', pid: 1, startedAt: '2026-12-06T00:00:00.000Z' });

describe('the xen target side against the simulator (replica VM, holds, marks, restore points)', () => {
  let pool: TestPool;
  let hv: XenDriver;
  let spec: ReplicaSpec;
  const warnings: string[] = [];
  beforeEach(async () => {
    warnings.length = 0;
    pool = await startPool();
    hv = await pool.driver({ networkMap: {} }, { onWarning: (m) => warnings.push(m), targetPreview: true }); // deprecated no-op
    const vm = await pool.makeVM('web', [MiB, 2 * MiB]);
    const source = await hv.getVM(vm.uuid);
    spec = {
      name: 'job-web',
      source: { ...source, networks: ['mgmt', 'lan'] },
      disks: source.disks.map((d) => ({ sourceDiskId: d.id, size: d.size })),
    };
  });
  afterEach(async () => {
    await hv.close();
    await pool.close();
  });

  const ref = (r: Replica) => pool.call<string>('VM.get_by_uuid', r.id);

  it('every instance is a target with restore points; targetPreview is a no-op', async () => {
    const plain = await pool.driver();
    try {
      expect(plain.capabilities).toMatchObject({ canBeSource: true, canBeTarget: true, restorePoints: true });
      expect((await plain.ensureReplica(spec)).created).toBe(true);
      expect(hv.capabilities).toEqual(plain.capabilities);
    } finally {
      await plain.close();
    }
  });

  it('a restore point whose marking was cut off (a kill right after VM.snapshot) is listed under its run and reused by a resumed commit', async () => {
    const replica = await hv.ensureReplica(spec);
    const run = 'job-web-20261206T120000Z-abc123';
    // What a process killed between the replica's VM.snapshot and its mark leaves; and a user's own.
    await pool.call('VM.snapshot', await ref(replica), `web-replica ${run}`);
    await pool.call('VM.snapshot', await ref(replica), 'web-replica before my upgrade');
    const listed = await hv.listRestorePoints(replica);
    expect(listed.map((p) => p.label)).toEqual([run]);
    const point = await hv.createRestorePoint(replica, run, { retention: 3 });
    expect(point.id).toBe(listed[0]!.id); // no second snapshot for the same run
    expect((await hv.listRestorePoints(replica)).map((p) => p.id)).toEqual([listed[0]!.id]);
    const snaps = await pool.call<string[]>('VM.get_snapshots', await ref(replica));
    expect(snaps).toHaveLength(2); // the point and the user's snapshot, which no retention prunes
  });

  it('creates a halted replica with the source shape, start blocked, marked; a second ensure finds it', async () => {
    const replica = await hv.ensureReplica(spec);
    expect(replica.created).toBe(true);
    const vm = await pool.call<Record<string, unknown>>('VM.get_record', await ref(replica));
    expect(vm.name_label).toBe('web-replica');
    expect(vm.power_state).toBe('Halted');
    expect(Number(vm.VCPUs_max)).toBe(spec.source.cpus);
    expect(Number(vm.memory_static_max)).toBe(spec.source.memoryMiB * MiB);
    expect(Object.keys(vm.blocked_operations as object).sort()).toEqual(['start', 'start_on']);
    expect(vm.other_config).toMatchObject({
      'replikit:replica': 'job-web',
      'replikit:replica-of': spec.source.id,
      'replikit:mark': 'in-progress',
    });
    const sizes = await Promise.all(
      (vm.VBDs as string[]).map(async (vbd) =>
        Number(await pool.call('VDI.get_virtual_size', await pool.call('VBD.get_VDI', vbd))),
      ),
    );
    expect(sizes.sort()).toEqual([MiB, 2 * MiB]);
    expect(vm.VIFs).toEqual([]); // no network is mapped: none is created …
    expect(warnings.join('\n')).toMatch(/'mgmt', 'lan'.*networkMap/); // … and the user is told

    // Found by other_config, not by name: renaming the VM does not lose it.
    await pool.call('VM.set_name_label', await ref(replica), 'renamed by a user');
    const again = await hv.ensureReplica(spec);
    expect(again).toMatchObject({ id: replica.id, created: false });
    expect(again.disks.map((d) => d.id)).toEqual(replica.disks.map((d) => d.id));
  });

  it('maps networks by networkMap: a mapped one gets a VIF, an unmapped one is left out and reported', async () => {
    const net = await pool.call<string>('network.get_uuid', pool.sim.refs.network);
    const mapped = await pool.driver({ networkMap: { lan: net } }, { onWarning: (m) => warnings.push(m) });
    try {
      const replica = await mapped.ensureReplica(spec);
      const vifs = await pool.call<string[]>('VM.get_VIFs', await ref(replica));
      expect(vifs).toHaveLength(1);
      expect(await pool.call('VIF.get_network', vifs[0])).toBe(pool.sim.refs.network);
      expect(await pool.call('VIF.get_device', vifs[0])).toBe('1'); // the source's position of 'lan'
      expect(warnings.join('\n')).toMatch(/'mgmt'/);
      expect(warnings.join('\n')).not.toMatch(/'lan'/);
    } finally {
      await mapped.close();
    }
  });

  it('a replica cannot be started while in progress: OPERATION_BLOCKED from XAPI, E_REPLICA_IN_PROGRESS from the driver', async () => {
    const replica = await hv.ensureReplica(spec);
    await expect(pool.call('VM.start', await ref(replica), false, false)).rejects.toMatchObject({
      xapiCode: 'OPERATION_BLOCKED',
    });
    await expect(hv.power(replica.id, 'start')).rejects.toMatchObject({ code: 'E_REPLICA_IN_PROGRESS' });
    await hv.markReplica(replica, 'ready');
    expect(await hv.replicaMark(replica)).toBe('ready');
    // Still a replica: start stays blocked on the pool, with the reason saying so.
    await expect(pool.call('VM.start', await ref(replica), false, false)).rejects.toMatchObject({
      xapiCode: 'OPERATION_BLOCKED',
    });
    await hv.markReplica(replica, 'in-progress');
    expect(await hv.replicaMark(replica)).toBe('in-progress');
  });

  it('power start of a ready replica lifts its start block and boots it; the fingerprint moves', async () => {
    const replica = await hv.ensureReplica(spec);
    await hv.createRestorePoint(replica, 'run-1');
    await hv.markReplica(replica, 'ready');
    const before = await hv.replicaState(replica);
    await hv.power(replica.id, 'start');
    expect(await pool.call('VM.get_power_state', await ref(replica))).toBe('Running');
    await hv.power(replica.id, 'shutdown');
    expect((await hv.replicaState(replica)).value).not.toBe(before.value);
  });

  it('holds live in other_config: one run wins, the same run re-takes, release ends it', async () => {
    const replica = await hv.ensureReplica(spec);
    expect(await hv.replicaOwner(replica)).toBeUndefined();
    expect(await hv.claimReplica(replica, owner('run-a'))).toMatchObject({ runId: 'run-a' });
    expect(await hv.claimReplica(replica, owner('run-b'))).toMatchObject({ runId: 'run-a' });
    const other = await pool.driver();
    try {
      expect(await other.replicaOwner(replica)).toMatchObject({ runId: 'run-a' });
    } finally {
      await other.close();
    }
    expect(await hv.claimReplica(replica, { ...owner('run-a'), pid: 2 })).toMatchObject({ pid: 2 });
    await hv.releaseReplica(replica, 'run-b');
    expect(await hv.replicaOwner(replica)).toMatchObject({ runId: 'run-a' });
    await hv.releaseReplica(replica, 'run-a');
    expect(await hv.replicaOwner(replica)).toBeUndefined();
  });

  it('restore points are snapshots of the replica, pruned by retention; revertTo brings the disks back', async () => {
    const replica = await hv.ensureReplica(spec);
    const vmRef = await ref(replica);
    const diskVdi = async () => {
      for (const vbd of await pool.call<string[]>('VM.get_VBDs', vmRef)) {
        if ((await pool.call('VBD.get_userdevice', vbd)) === '0') return pool.call<string>('VBD.get_VDI', vbd);
      }
      throw new Error('no disk 0');
    };
    const p1 = await hv.createRestorePoint(replica, 'run-1', { retention: 2 });
    expect(await hv.createRestorePoint(replica, 'run-1', { retention: 2 })).toEqual(p1);
    const before = await hv.replicaState(replica);
    // A disk changed outside replikit: stands for a write (the sim grows the VDI).
    await pool.call('VDI.resize', await diskVdi(), 4 * MiB);
    const resized = await hv.replicaState(replica);
    expect(resized.value).not.toBe(before.value);
    await hv.createRestorePoint(replica, 'run-2', { retention: 2 });
    await hv.revertTo(replica, p1); // back to the 1 MiB disk of run-1, on a fresh clone
    expect(Number(await pool.call('VDI.get_virtual_size', await diskVdi()))).toBe(MiB);
    expect((await hv.replicaState(replica)).value).not.toBe(resized.value);
    expect(await pool.call('VM.get_power_state', vmRef)).toBe('Halted');
    await hv.createRestorePoint(replica, 'run-3', { retention: 2 });
    // The revert dropped run-2 (the replica no longer descends from it); retention keeps two.
    expect((await hv.listRestorePoints(replica)).map((p) => p.label)).toEqual(['run-1', 'run-3']);
    await hv.createRestorePoint(replica, 'run-4', { retention: 2 });
    expect((await hv.listRestorePoints(replica)).map((p) => p.label)).toEqual(['run-3', 'run-4']);
    await expect(hv.revertTo(replica, p1)).rejects.toMatchObject({ code: 'E_NOT_FOUND' });
    // Unblocking start (as a boot needs) changes the fingerprint.
    const settled = await hv.replicaState(replica);
    await pool.call('VM.remove_from_blocked_operations', vmRef, 'start');
    expect((await hv.replicaState(replica)).value).not.toBe(settled.value);
  });

  it("writes reach the replica only at createRestorePoint; another run's pending writes are dropped", async () => {
    const replica = await hv.ensureReplica(spec);
    const disk = replica.disks[1]!;
    const bytes = new Uint8Array(3 * 4096 + 5).map((_, i) => (i * 7 + 1) & 0xff);
    const writer = await hv.openWriter(replica, disk, { runId: 'run-1' });
    await writer.write(MiB + 1234, bytes); // crosses no 2 MiB block; a partial block read first
    await writer.write(0, new Uint8Array(512).fill(9));
    await writer.close();
    const zero = new Uint8Array(disk.size);
    expect(Buffer.from(await readWholeDisk(hv, disk)).equals(Buffer.from(zero))).toBe(true);
    const before = await hv.replicaState(replica);
    await hv.createRestorePoint(replica, 'run-1');
    expect((await hv.replicaState(replica)).value).not.toBe(before.value);
    const expected = new Uint8Array(disk.size);
    expected.fill(9, 0, 512);
    expected.set(bytes, MiB + 1234);
    expect(Buffer.from(await readWholeDisk(hv, disk)).equals(Buffer.from(expected))).toBe(true);
    // Idempotent per label: nothing pending, the same label gives the same point.
    const points = await hv.listRestorePoints(replica);
    expect(await hv.createRestorePoint(replica, 'run-1')).toEqual(points.at(-1));

    // Run 2 writes and crashes; run 3 claims: run 2's pending clone is gone, the replica unchanged.
    const w2 = await hv.openWriter(replica, disk, { runId: 'run-2' });
    await w2.write(0, new Uint8Array(512).fill(5));
    await w2.close();
    expect(await hv.claimReplica(replica, owner('run-3'))).toMatchObject({ runId: 'run-3' });
    await hv.createRestorePoint(replica, 'run-3');
    expect(Buffer.from(await readWholeDisk(hv, disk)).equals(Buffer.from(expected))).toBe(true);
  });

  it('refuses a replica of another shape, a writer of an unknown disk, and writers of a run not holding it', async () => {
    const replica = await hv.ensureReplica(spec);
    const bigger = { ...spec, disks: [...spec.disks, { sourceDiskId: 'extra', size: MiB }] };
    await expect(hv.ensureReplica(bigger)).rejects.toMatchObject({ code: 'E_CONFLICT' });
    const unknown = { ...replica.disks[0]!, id: 'no-such-disk' };
    await expect(hv.openWriter(replica, unknown)).rejects.toMatchObject({ code: 'E_NOT_FOUND' });
    await hv.claimReplica(replica, owner('winner'));
    await expect(hv.openWriter(replica, replica.disks[0]!, { runId: 'loser' })).rejects.toMatchObject({
      code: 'E_CONFLICT',
    });
    await expect(hv.openWriter(replica, replica.disks[0]!)).rejects.toMatchObject({ code: 'E_CONFLICT' });
    const writer = await hv.openWriter(replica, replica.disks[0]!, { runId: 'winner' });
    await writer.close();
  });

  it('revertTo leaves the replica ready; a reader of a disk the replica does not have is refused', async () => {
    const replica = await hv.ensureReplica(spec);
    const point = await hv.createRestorePoint(replica, 'run-1');
    await hv.markReplica(replica, 'in-progress');
    await hv.revertTo(replica, point);
    expect(await hv.replicaMark(replica)).toBe('ready');
    const unknown = { ...replica.disks[0]!, id: 'no-such-disk' };
    await expect(hv.openReader(unknown)).rejects.toMatchObject({ code: 'E_NOT_FOUND' });
  });

  it('deleteReplica leaves no VM, restore point or VDI behind', async () => {
    const vdisBefore = Object.keys(await pool.call<object>('VDI.get_all_records')).length;
    const replica = await hv.ensureReplica(spec);
    await hv.createRestorePoint(replica, 'run-1');
    await hv.deleteReplica(replica);
    await expect(pool.call('VM.get_by_uuid', replica.id)).rejects.toMatchObject({ xapiCode: 'UUID_INVALID' });
    expect(Object.keys(await pool.call<object>('VDI.get_all_records')).length).toBe(vdisBefore);
  });
});
