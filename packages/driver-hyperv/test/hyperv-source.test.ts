import { isReplikitError } from '@replikit/core';
import {
  checkAbortHonoured,
  checkChangeTrackerModel,
  checkCloseReleases,
  compareBytes,
  type DriverConformanceFixtures,
  readWholeDisk,
  testPattern,
} from '@replikit/core/testing';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { HyperVDriver, HyperVVMInfo } from '../src/index.js';
import { type SimHost, startSimHost } from './helpers/sim-host.js';

const MiB = 2 ** 20;

/** The conformance fixtures of the source side: VMs made and written on the simulated host. */
function sourceFixtures(sim: SimHost, hv: HyperVDriver): DriverConformanceFixtures {
  return {
    createSourceVM: async (_hv, spec) => {
      await sim.makeVM(
        spec.name,
        spec.disks.map((d) => d.size),
      );
      return hv.getVM(spec.name);
    },
    writeGuest: async (_hv, vmId, diskId, offset, data) => {
      const vm = await hv.getVM(vmId);
      await sim.host.guestWrite(
        vm.name,
        vm.disks.findIndex((d) => d.id === diskId),
        offset,
        data,
      );
    },
    writeOutside: async () => {
      throw new Error('no replicas on the source side');
    },
  };
}

async function collect(answer: AsyncIterable<{ offset: number; length: number }> | undefined) {
  if (!answer) return undefined;
  const out: { offset: number; length: number }[] = [];
  for await (const e of answer) out.push(e);
  return out;
}

// Each driver starts a fake pwsh (Node + the grammar); on a loaded machine that alone takes seconds.
describe('the Hyper-V driver, source side, on the simulated host', { timeout: 180_000 }, () => {
  let sim: SimHost;
  beforeEach(async () => {
    sim = await startSimHost();
  });
  afterEach(async () => {
    await sim.close();
  });

  it('lists VMs with their disks, NICs with MACs, generation and configuration version', async () => {
    await sim.makeVM('web', [4 * MiB, 6 * MiB + 512], { generation: 1, cpus: 3 });
    const hv = await sim.driver();
    const [vm] = (await hv.listVMs()) as HyperVVMInfo[];
    expect(vm).toMatchObject({
      name: 'web',
      cpus: 3,
      memoryMiB: 1024,
      powerState: 'stopped',
      generation: 1,
      configurationVersion: '10.0',
    });
    expect(vm!.disks.map((d) => [d.id, d.size])).toEqual([
      ['IDE:0:0', 4 * MiB],
      ['IDE:0:1', 6 * MiB + 512],
    ]);
    expect(vm!.nics).toEqual([
      { name: 'Network Adapter', macAddress: expect.stringMatching(/^00155D[0-9A-F]{6}$/), switchName: null },
    ]);
    expect(await hv.getVM('web')).toEqual(vm);
    expect(await hv.getVM(vm!.id)).toEqual(vm);
    const missing = await hv.getVM('nope').catch((e: unknown) => e);
    expect(isReplikitError(missing, 'E_NOT_FOUND')).toBe(true);
  });

  it('snapshots as a recovery checkpoint of every disk, labelled; its readers see the frozen content', async () => {
    await sim.makeVM('db', [4 * MiB, 4 * MiB]);
    await sim.host.guestWrite('db', 0, 4095, testPattern(1, 70_000));
    await sim.host.guestWrite('db', 1, 0, testPattern(2, 512));
    const hv = await sim.driver();
    const vm = await hv.getVM('db');
    const snap = await hv.snapshot(vm.id, 'replikit-run-1');
    expect(snap.disks.map((d) => [d.id, d.snapshotId])).toEqual([
      ['SCSI:0:0', snap.id],
      ['SCSI:0:1', snap.id],
    ]);
    const state = await sim.host.state();
    expect(state.snapshots?.map((s) => [s.name, s.snapshotType])).toEqual([['replikit-run-1', 'Recovery']]);
    const before = await readWholeDisk(hv, snap.disks[0]!);
    await sim.host.guestWrite('db', 0, 0, testPattern(3, 9000));
    const again = JSON.parse(JSON.stringify(snap));
    expect(compareBytes(await readWholeDisk(hv, again.disks[0]), before)).toBe('equal');
    expect(compareBytes(before.subarray(4095, 4095 + 70_000), testPattern(1, 70_000))).toBe('equal');
    expect((await hv.listSnapshots(vm.id)).map((s) => s.label)).toEqual(['replikit-run-1']);
    await hv.deleteSnapshot(snap);
    expect(await hv.listSnapshots(vm.id)).toEqual([]);
    expect(await sim.host.guestRead('db', 0, 0, 9000)).toEqual(testPattern(3, 9000));
  });

  it('tracks every changed byte through RCT between any two snapshots (the conformance model check)', async () => {
    const hv = await sim.driver();
    const result = await checkChangeTrackerModel({
      hv,
      name: 'model',
      size: 4 * MiB,
      fixtures: sourceFixtures(sim, hv),
    });
    expect(result.answered).toBeGreaterThan(4);
  });

  it('answers "cannot tell" when RCT is off, the base id is gone, or the disk set changed', async () => {
    await sim.makeVM('old', [4 * MiB], { version: '5.0' });
    await sim.makeVM('new', [4 * MiB]);
    const hv = await sim.driver();
    const tracker = hv.changeTracker!;
    // Configuration version 5.0: no RCT, so a standard/production checkpoint and no answer.
    const old = await hv.getVM('old');
    const o1 = await hv.snapshot(old.id, 'o1');
    const o2 = await hv.snapshot(old.id, 'o2');
    expect((await sim.host.state()).snapshots?.map((s) => s.snapshotType)).toEqual(['Standard', 'Standard']);
    expect(await tracker.changes(o2.disks[0]!, o1, o2)).toBeUndefined();

    const vm = await hv.getVM('new');
    const s1 = await hv.snapshot(vm.id, 's1');
    await sim.host.guestWrite('new', 0, MiB + 1, testPattern(4, 100));
    const s2 = await hv.snapshot(vm.id, 's2');
    expect(await collect(await tracker.changes(s2.disks[0]!, s1, s2))).toEqual([{ offset: MiB + 1, length: 100 }]);
    // The engine's cleanup drops the base: its reference point is destroyed, its id gone.
    await hv.deleteSnapshot(s1);
    const plain = await sim.driver({ rct: false }); // a new driver: nothing remembered
    expect(await plain.changeTracker!.changes(s2.disks[0]!, s1, s2)).toBeUndefined();
    // A disk added: the disk set changed.
    await sim.addDisk('new', 4 * MiB);
    const s3 = await hv.snapshot(vm.id, 's3');
    expect(s3.disks).toHaveLength(2);
    expect(await tracker.changes(s3.disks[0]!, s2, s3)).toBeUndefined();
    // The option off: no recovery checkpoint, no answer.
    const p1 = await plain.snapshot(vm.id, 'p1');
    const p2 = await plain.snapshot(vm.id, 'p2');
    expect(p1.meta).toMatchObject({ rct: false });
    expect(await plain.changeTracker!.changes(p2.disks[0]!, p1, p2)).toBeUndefined();
  });

  it('rejects every call on an aborted signal, doing nothing, and closes its readers on close() (conformance checks)', async () => {
    const hv = await sim.driver();
    await checkAbortHonoured({ hv, fixtures: sourceFixtures(sim, hv), name: 'abort', size: 4 * MiB });
    await checkCloseReleases({ hv, fixtures: sourceFixtures(sim, hv), name: 'close', size: 4 * MiB });
  });
});
