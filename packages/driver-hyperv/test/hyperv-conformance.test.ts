import type { Hypervisor, Replica } from '@replikit/core';
import { type DriverConformanceFixtures, runDriverConformance } from '@replikit/core/testing';
import { localTransport } from '@replikit/transport';
import { afterAll, beforeAll } from 'vitest';
import { type SimHost, startSimHost } from './helpers/sim-host.js';

// Conformance v2 of the Hyper-V driver as source AND target, on one simulated host with one fake
// pwsh for the whole file (each start costs seconds): once with RCT (tracked incremental runs),
// once without (recovery checkpoints off: the engine compares hashes). The second pass doubles the
// file's time (about 40 s each on a loaded machine): it runs with REPLIKIT_HYPERV_CONFORMANCE_ALL=1.
let sim: SimHost | undefined;
const ready = (): SimHost => {
  if (!sim) throw new Error('the simulated host is not started');
  return sim;
};
beforeAll(async () => {
  sim = await startSimHost();
}, 120_000);
afterAll(async () => {
  await sim?.close();
});

async function vmName(hv: Hypervisor, vmId: string): Promise<string> {
  return (await hv.getVM(vmId)).name;
}

const fixtures: DriverConformanceFixtures = {
  createSourceVM: async (hv, spec) => {
    await ready().makeVM(
      spec.name,
      spec.disks.map((d) => d.size),
    );
    return hv.getVM(spec.name);
  },
  writeGuest: async (hv, vmId, diskId, offset, data) => {
    const vm = await hv.getVM(vmId);
    await ready().host.guestWrite(
      vm.name,
      vm.disks.findIndex((d) => d.id === diskId),
      offset,
      data,
    );
  },
  writeOutside: async (hv, replica: Replica, diskId, offset, data) => {
    const index = replica.disks.findIndex((d) => d.id === diskId);
    await ready().host.guestWrite(await vmName(hv, replica.id), index, offset, data);
  },
};

const passes = process.env.REPLIKIT_HYPERV_CONFORMANCE_ALL === '1' ? [true, false] : [true];
for (const rct of passes) {
  runDriverConformance({
    name: `hyperv (${rct ? 'RCT' : 'no RCT'}) on the simulated host`,
    create: async () => ready().sharedDriver({ rct }),
    fixtures,
    transport: localTransport(),
    trackedVMs: rct,
    sizeGranule: 512, // VHDX sizes are whole sectors
  });
}
