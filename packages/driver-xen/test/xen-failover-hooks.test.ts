import type { Hypervisor, ReplicaSpec } from '@replikit/core';
import { compareBytes, defineFailoverCases, readWholeDisk, testPattern } from '@replikit/core/testing';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { XenDriver } from '../src/index.js';
import { poolFixtures, startPool, type TestPool } from './helpers/xen-pool.js';

const MiB = 1024 * 1024;
const SIZE = 4 * MiB;

// The failover cases of the conformance suite, on their own (xen-conformance.test.ts runs them
// too, inside the whole suite), then what is particular to Xen: mapped networks, a clone cut off
// right after VM.clone, the retired replica's name.
describe('xen failover hooks on the simulator', () => {
  let pool: TestPool;
  let hv: XenDriver;
  let counter = 0;
  const unique = (tag: string) => `xfo-${tag}-${process.pid.toString(36)}-${(counter++).toString(36)}`;
  const fixtures = poolFixtures(() => pool, true);

  beforeAll(async () => {
    pool = await startPool();
  });
  afterAll(async () => {
    await pool?.close();
  });
  beforeEach(async () => {
    hv = await pool.driver();
  });
  afterEach(async () => {
    await hv?.close();
  });

  const seedReplica = async (tag: string) => {
    const source = await fixtures.createSourceVM(hv, { name: unique(`${tag}-src`), disks: [{ id: 'd0', size: SIZE }] });
    const spec: ReplicaSpec = {
      name: unique(`${tag}-rep`),
      source,
      disks: source.disks.map((d) => ({ sourceDiskId: d.id, size: d.size })),
    };
    return { spec, replica: await hv.ensureReplica(spec) };
  };

  defineFailoverCases({ hv: () => hv as Hypervisor, fixtures, size: SIZE, seedReplica, unique });

  /** A replica at one restore point holding a pattern at 0; returns its model. */
  async function replicaAtPoint(tag: string) {
    const { spec, replica } = await seedReplica(tag);
    const disk = replica.disks[0]!;
    const model = new Uint8Array(SIZE);
    const writer = await hv.openWriter(replica, disk, { runId: `${tag}-run` });
    try {
      const data = testPattern(9, 65_536);
      await writer.write(0, data);
      model.set(data, 0);
    } finally {
      await writer.close();
    }
    await hv.markReplica(replica, 'ready');
    const point = await hv.createRestorePoint(replica, `${tag}-point`);
    return { spec, replica, disk, model, point };
  }

  it('a mapped clone has a VIF on the mapped network only; an isolated one has none', async () => {
    const other = await pool.call<string>('network.create', {
      name_label: 'test-net',
      name_description: '',
      MTU: '1500',
      other_config: {},
    });
    const otherUuid = await pool.call<string>('network.get_uuid', other);
    const sourceNet = await pool.call<string>('network.get_uuid', pool.sim.refs.network);
    const mapped = await pool.driver({ networkMap: { [sourceNet]: sourceNet } });
    try {
      const source = await fixtures.createSourceVM(mapped, {
        name: unique('net-src'),
        disks: [{ id: 'd0', size: SIZE }],
      });
      const replica = await mapped.ensureReplica({
        name: unique('net-rep'),
        source: { ...source, networks: [sourceNet] },
        disks: source.disks.map((d) => ({ sourceDiskId: d.id, size: d.size })),
      });
      await mapped.markReplica(replica, 'ready');
      const point = await mapped.createRestorePoint(replica, 'net-point');
      const clone = await mapped.cloneRestorePoint!(replica, point, {
        name: unique('net-clone'),
        operationId: 'op-net',
        network: { mode: 'mapped', map: { [sourceNet]: otherUuid } },
      });
      expect(clone.networks).toEqual([otherUuid]);
      // Asked again (a resume): the same clone, still one VIF.
      const again = await mapped.cloneRestorePoint!(replica, point, {
        name: clone.name,
        operationId: 'op-net',
        network: { mode: 'mapped', map: { [sourceNet]: otherUuid } },
      });
      expect(again).toMatchObject({ id: clone.id, networks: [otherUuid] });
      const isolated = await mapped.cloneRestorePoint!(replica, point, { name: unique('iso'), operationId: 'op-iso' });
      expect(isolated.networks).toEqual([]);
      for (const c of [clone, isolated]) await mapped.destroyClone!(c.id);
      expect(await mapped.listClones!(replica)).toEqual([]);
    } finally {
      await mapped.close();
    }
  });

  it('a clone cut off right after VM.clone (unmarked, a template) is listed, finished by the same call, and deleted whole', async () => {
    const { replica, model, point } = await replicaAtPoint('cut');
    const snapshot = await pool.call<string>('VM.get_by_uuid', point.id);
    const name = unique('cut-clone');
    const cut = await pool.call<string>('VM.clone', snapshot, name); // what the killed call left
    const cutUuid = await pool.call<string>('VM.get_uuid', cut);
    expect((await hv.listClones!(replica)).map((c) => c.id)).toEqual([cutUuid]);
    // ensureReplica never takes it for the replica.
    const vdisBefore = Object.keys(await pool.call<Record<string, unknown>>('VDI.get_all_records')).length;
    const clone = await hv.cloneRestorePoint!(replica, point, { name, operationId: 'op-cut' });
    expect(clone).toMatchObject({ id: cutUuid, replicaId: replica.id, pointId: point.id, networks: [] });
    const vm = await hv.getVM(clone.id);
    expect(compareBytes(await readWholeDisk(hv, vm.disks[0]!), model)).toBe('equal');
    await hv.destroyClone!(clone.id);
    expect(Object.keys(await pool.call<Record<string, unknown>>('VDI.get_all_records')).length).toBe(vdisBefore - 1);
    expect(await hv.listClones!(replica)).toEqual([]);
  });

  it('an unmarked clone is deleted by destroyClone too, its disks with it', async () => {
    const { replica, point } = await replicaAtPoint('cut2');
    const vdisBefore = Object.keys(await pool.call<Record<string, unknown>>('VDI.get_all_records')).length;
    const cut = await pool.call<string>('VM.clone', await pool.call<string>('VM.get_by_uuid', point.id), unique('c2'));
    const [listed] = await hv.listClones!(replica);
    expect(listed?.id).toBe(await pool.call<string>('VM.get_uuid', cut));
    await hv.destroyClone!(listed!.id);
    expect(Object.keys(await pool.call<Record<string, unknown>>('VDI.get_all_records')).length).toBe(vdisBefore);
  });

  it('a retired replica is a production VM: ensureReplica of its name refuses it, and its start is not blocked', async () => {
    const { spec, replica, point } = await replicaAtPoint('retire');
    await hv.promoteReplica!(replica, point);
    await hv.commitFailover!(replica);
    await hv.retireReplica!(replica);
    await expect(hv.ensureReplica(spec)).rejects.toMatchObject({ code: 'E_CONFLICT' });
    await expect(hv.failoverMark!(replica)).rejects.toMatchObject({ code: 'E_FAILED_OVER' });
    await expect(hv.claimReplica(replica, { runId: 'r', host: 'h', pid: 1, startedAt: '' })).rejects.toMatchObject({
      code: 'E_FAILED_OVER',
    });
    const ref = await pool.call<string>('VM.get_by_uuid', replica.id);
    expect(await pool.call('VM.get_blocked_operations', ref)).toEqual({});
    expect(await pool.call('VM.get_power_state', ref)).toBe('Running');
    expect(await pool.call<string[]>('VM.get_snapshots', ref)).toEqual([]);
  });

  it('a commit cut between its disk swap and its snapshot (marked in progress, no pending VDI) is never promoted', async () => {
    const { replica, disk, model, point } = await replicaAtPoint('cutcommit');
    await hv.markReplica(replica, 'in-progress');
    const writer = await hv.openWriter(replica, disk, { runId: 'cut-run' });
    await writer.write(0, testPattern(11, 4096));
    await writer.close();
    const release = pool.sim.hold('VM.snapshot'); // the commit swaps the disk in, then stops here
    const committing = hv.createRestorePoint(replica, 'cut-run');
    try {
      // Wait (on XAPI's events, no sleep) until the restore point's VM.snapshot task is pending.
      let token = '';
      for (;;) {
        const batch = await pool.call<{ token: string }>('event.from', ['task'], token, 30);
        token = batch.token;
        const tasks = await pool.call<Record<string, { name_label: string; status: string }>>('task.get_all_records');
        if (Object.values(tasks).some((t) => t.name_label.includes('VM.snapshot') && t.status === 'pending')) break;
      }
      const vdis = await pool.call<Record<string, { other_config: Record<string, string> }>>('VDI.get_all_records');
      expect(Object.values(vdis).filter((v) => v.other_config['replikit:pending-of']?.startsWith(replica.id))).toEqual(
        [],
      );
      await expect(hv.promoteReplica!(replica, point)).rejects.toMatchObject({ code: 'E_CONFLICT' });
      expect((await hv.getVM(replica.id)).powerState).toBe('stopped');
      expect(await hv.failoverMark!(replica)).toEqual({ state: 'replica' });
    } finally {
      release();
      await committing;
    }
    expect(compareBytes(await readWholeDisk(hv, disk), model)).not.toBe('equal');
  });

  it('powerOff stops a running VM at once, and a stopped one stays stopped', async () => {
    const vm = await pool.makeVM(unique('off'), [MiB]);
    await hv.powerOff!(vm.uuid);
    expect((await hv.getVM(vm.uuid)).powerState).toBe('stopped');
    await hv.powerOff!(vm.uuid);
    expect((await hv.getVM(vm.uuid)).powerState).toBe('stopped');
  });
});
