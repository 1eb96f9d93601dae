import { expect, it } from 'vitest';
import type { DiskRef, Hypervisor, Replica, RestorePoint } from '../contracts/index.js';
import type { ErrorCode } from '../errors.js';
import type { DriverConformanceFixtures } from './conformance-types.js';
import { compareBytes, readWholeDisk, testPattern } from './test-data.js';

/** What the failover cases borrow from the conformance suite. */
export interface FailoverCaseEnv {
  /** The driver of the current test. */
  hv(): Hypervisor;
  /** The driver's fixtures. */
  fixtures: DriverConformanceFixtures;
  /** Size of the suite's disks. */
  size: number;
  /** Makes a fresh replica (no restore point yet) with one disk. */
  seedReplica(tag: string): Promise<{ replica: Replica }>;
  /** Makes a unique VM name. */
  unique(tag: string): string;
}

const owner = (runId: string) => ({
  runId,
  host: 'conformance',
  pid: process.pid,
  startedAt: new Date().toISOString(),
});

async function expectCode(action: () => Promise<unknown>, code: ErrorCode): Promise<void> {
  await expect((async () => action())()).rejects.toMatchObject({ code });
}

/** A replica with one restore point holding a pattern; returns the point and the disk's model. */
async function replicaAtPoint(env: FailoverCaseEnv, tag: string) {
  const hv = env.hv();
  const { replica } = await env.seedReplica(tag);
  const disk = replica.disks[0]!;
  const model = new Uint8Array(env.size);
  const writer = await hv.openWriter(replica, disk, { runId: `${tag}-run` });
  try {
    for (const [i, offset] of [0, 65_537, env.size - 4096].entries()) {
      const data = testPattern(40 + i, 4096);
      await writer.write(offset, data);
      model.set(data, offset);
    }
  } finally {
    await writer.close();
  }
  const point = await hv.createRestorePoint(replica, `${tag}-point`);
  return { replica, disk, model, point };
}

async function expectDisk(hv: Hypervisor, disk: DiskRef, model: Uint8Array): Promise<void> {
  expect(compareBytes(await readWholeDisk(hv, disk), model)).toBe('equal');
}

/**
 * Registers the failover cases of the conformance suite (vitest `it` blocks): a driver that
 * declares `capabilities.failover` must clone a restore point without touching the replica,
 * promote and undo byte for byte, refuse runs while failed over, commit and retire. Skipped for
 * drivers without the capability.
 */
export function defineFailoverCases(env: FailoverCaseEnv): void {
  const usable = (hv: Hypervisor) => hv.capabilities.failover === true && hv.capabilities.canBeTarget;

  it('failover: declares every hook with capabilities.failover', (ctx) => {
    const hv = env.hv();
    if (!usable(hv)) ctx.skip();
    for (const hook of [
      'cloneRestorePoint',
      'destroyClone',
      'listClones',
      'promoteReplica',
      'demoteReplica',
      'commitFailover',
      'retireReplica',
      'failoverMark',
    ] as const) {
      expect(typeof hv[hook], hook).toBe('function');
    }
  });

  it('failover: clones a restore point into a disposable VM and never touches the replica', async (ctx) => {
    const hv = env.hv();
    if (!usable(hv)) ctx.skip();
    const { replica, model, point } = await replicaAtPoint(env, 'clone');
    const before = await hv.replicaState(replica);
    const name = env.unique('clone');
    const clone = await hv.cloneRestorePoint!(replica, point, { name, operationId: 'op-1' });
    expect(clone).toMatchObject({ replicaId: replica.id, pointId: point.id, operationId: 'op-1', networks: [] });
    expect(await hv.cloneRestorePoint!(replica, point, { name, operationId: 'op-1' })).toMatchObject({ id: clone.id });
    const vm = await hv.getVM(clone.id);
    expect(vm.powerState).toBe('stopped');
    await expectDisk(hv, vm.disks[0]!, model);
    await hv.power(clone.id, 'start');
    expect((await hv.listClones!(replica)).map((c) => c.id)).toEqual([clone.id]);
    await hv.destroyClone!(clone.id);
    await hv.destroyClone!(clone.id); // twice is harmless
    await expectCode(() => hv.getVM(clone.id), 'E_NOT_FOUND');
    expect(await hv.listClones!(replica)).toEqual([]);
    expect((await hv.listRestorePoints(replica)).map((p) => p.id)).toEqual([point.id]);
    expect((await hv.replicaState(replica)).value).toBe(before.value);
    await expectCode(() => hv.destroyClone!(replica.id), 'E_CONFLICT');
  });

  it('failover: promotes, refuses runs, and undoes byte for byte', async (ctx) => {
    const hv = env.hv();
    if (!usable(hv)) ctx.skip();
    const { replica, disk, model, point } = await replicaAtPoint(env, 'promote');
    expect(await hv.failoverMark!(replica)).toEqual({ state: 'replica' });
    await expectCode(() => hv.demoteReplica!(replica).then(() => hv.commitFailover!(replica)), 'E_FAILED_OVER');
    await hv.promoteReplica!(replica, point);
    await hv.promoteReplica!(replica, point); // idempotent
    expect(await hv.failoverMark!(replica)).toEqual({ state: 'promoted', pointId: point.id });
    expect((await hv.getVM(replica.id)).powerState).toBe('running');
    await expectCode(() => hv.claimReplica(replica, owner('run-after-failover')), 'E_FAILED_OVER');
    await expectCode(() => hv.openWriter(replica, disk, { runId: 'run-after-failover' }), 'E_FAILED_OVER');
    // The failed-over VM is written (as its guest would).
    await env.fixtures.writeOutside(hv, replica, disk.id, 8192, testPattern(77, 70_000));
    await hv.demoteReplica!(replica);
    await hv.demoteReplica!(replica); // idempotent
    expect(await hv.failoverMark!(replica)).toEqual({ state: 'replica' });
    expect((await hv.getVM(replica.id)).powerState).toBe('stopped');
    expect(await hv.replicaMark(replica)).toBe('ready');
    await expectDisk(hv, disk, model);
    expect((await hv.listRestorePoints(replica)).map((p: RestorePoint) => p.id)).toEqual([point.id]);
    // Runs write it again.
    expect((await hv.claimReplica(replica, owner('run-after-undo'))).runId).toBe('run-after-undo');
    await hv.releaseReplica(replica, 'run-after-undo');
  });

  it('failover: refuses to promote a replica a run holds or one with pending writes; it never starts', async (ctx) => {
    const hv = env.hv();
    if (!usable(hv)) ctx.skip();
    const { replica, disk, point } = await replicaAtPoint(env, 'held');
    await hv.claimReplica(replica, owner('holding-run'));
    await expectCode(() => hv.promoteReplica!(replica, point), 'E_CONFLICT');
    expect(await hv.failoverMark!(replica)).toEqual({ state: 'replica' });
    await hv.releaseReplica(replica, 'holding-run');
    // Writes left pending (a run that stopped and was abandoned): the replica is in progress.
    const writer = await hv.openWriter(replica, disk);
    await writer.write(0, testPattern(50, 4096));
    await writer.close();
    expect(await hv.replicaMark(replica)).toBe('in-progress');
    await expectCode(() => hv.promoteReplica!(replica, point), 'E_CONFLICT');
    expect((await hv.getVM(replica.id)).powerState).toBe('stopped');
    expect(await hv.failoverMark!(replica)).toEqual({ state: 'replica' });
  });

  it('failover: commits (no undo after) and retires the replica so no run can overwrite it', async (ctx) => {
    const hv = env.hv();
    if (!usable(hv)) ctx.skip();
    const { replica, point } = await replicaAtPoint(env, 'commit');
    await expectCode(() => hv.retireReplica!(replica), 'E_FAILED_OVER');
    await hv.promoteReplica!(replica, point);
    await hv.commitFailover!(replica);
    await hv.commitFailover!(replica); // idempotent
    expect(await hv.failoverMark!(replica)).toEqual({ state: 'committed', pointId: point.id });
    await expectCode(() => hv.demoteReplica!(replica), 'E_FAILED_OVER');
    await hv.retireReplica!(replica);
    await hv.retireReplica!(replica); // idempotent
    const vm = await hv.getVM(replica.id);
    await expectCode(
      () =>
        hv.ensureReplica({
          name: replica.name,
          source: vm,
          disks: vm.disks.map((d) => ({ sourceDiskId: d.id, size: d.size })),
        }),
      'E_CONFLICT',
    );
  });
}
