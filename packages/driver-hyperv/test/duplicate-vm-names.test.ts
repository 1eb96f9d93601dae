import { adminCmdlet } from '@replikit/hyperv-sim';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type SimHost, startSimHost } from './helpers/sim-host.js';

const MiB = 2 ** 20;

// Hyper-V lets two VMs share a name; the driver's scripts name VMs (-VMName), so it must refuse.
describe('two source VMs of one name', { timeout: 180_000 }, () => {
  let sim: SimHost;
  beforeEach(async () => {
    sim = await startSimHost();
  });
  afterEach(async () => {
    await sim.close();
  });

  it('are refused with E_CONFLICT naming both ids, by name and by id, until one is renamed', async () => {
    await sim.makeVM('twin', [4 * MiB]);
    const hv = sim.sharedDriver();
    const first = await hv.getVM('twin');
    await sim.makeVM('made-apart', [2 * MiB]);
    // Renamed after its disk went in (the simulator's -VMName takes the first match, as findVm does).
    await adminCmdlet(sim.host.root, 'Set-VM', { Name: 'made-apart', NewVMName: 'Twin' }); // names compare without case
    const second = (await hv.listVMs()).find((v) => v.id !== first.id)!;
    expect(second.name).toBe('Twin');

    const byName = await hv.getVM('twin').catch((e: unknown) => e);
    expect(byName).toMatchObject({ code: 'E_CONFLICT' });
    expect(String((byName as Error).message)).toContain(first.id);
    expect(String((byName as Error).message)).toContain(second.id);
    // Even by id: what follows would name the VM, and `-VMName twin` reaches both.
    await expect(hv.snapshot(first.id, 'run-1')).rejects.toMatchObject({ code: 'E_CONFLICT' });
    expect((await sim.host.state()).snapshots ?? []).toEqual([]);

    // The administrator renames the first one (the simulator's Set-VM -Name takes the first match).
    await adminCmdlet(sim.host.root, 'Set-VM', { Name: 'twin', NewVMName: 'other' });
    expect((await hv.getVM('other')).id).toBe(first.id);
    expect((await hv.getVM('twin')).id).toBe(second.id);
    const snap = await hv.snapshot(second.id, 'run-1');
    expect(snap.disks.map((d) => d.size)).toEqual([2 * MiB]);
    await hv.deleteSnapshot(snap);
  });
});
