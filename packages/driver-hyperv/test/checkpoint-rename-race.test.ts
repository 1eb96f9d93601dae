import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { HyperVDriver, type PowerShellLink, type PsScript } from '../src/index.js';
import { type SimHost, startSimHost } from './helpers/sim-host.js';

const MiB = 2 ** 20;

/**
 * The simulated host's link, except that just before its first `Rename-VMSnapshot` reaches the
 * host, `meanwhile` runs: another job of the same source VM acting between this job's
 * `CreateSnapshot` and its rename.
 */
function raceBeforeRename(link: PowerShellLink, meanwhile: () => Promise<unknown>): PowerShellLink {
  let raced = false;
  return new Proxy(link, {
    get(target, key) {
      if (key !== 'call') return Reflect.get(target, key);
      return async (script: PsScript, params?: Record<string, unknown>, options?: { timeoutMs?: number }) => {
        if (script.name === 'rename-checkpoint' && !raced) {
          raced = true;
          await meanwhile();
        }
        return target.call(script, params, options);
      };
    },
  });
}

describe('two jobs of one source VM: one lists snapshots while the other is about to rename its checkpoint', {
  timeout: 180_000,
}, () => {
  let sim: SimHost;
  beforeEach(async () => {
    sim = await startSimHost();
  });
  afterEach(async () => {
    await sim.close();
  });

  // The other job's listing names the fresh checkpoint with this job's label (it takes it for the
  // checkpoint of a run killed before its rename); this job's own rename then finds no checkpoint
  // of Hyper-V's default name. The checkpoint carries the label the job wanted: the snapshot stands.
  it('takes the snapshot when the other job already gave the checkpoint this run’s label', async () => {
    await sim.makeVM('race', [4 * MiB]);
    const other = sim.sharedDriver();
    const vm = await other.getVM('race');
    const job = new HyperVDriver({
      link: raceBeforeRename(sim.link, () => other.listSnapshots(vm.id)),
      sharedLink: true,
    });
    const snapshot = await job.snapshot(vm.id, 'replikit-race-1');
    expect(snapshot.label).toBe('replikit-race-1');
    const listed = await other.listSnapshots(vm.id);
    expect(listed.map((s) => [s.id, s.label])).toEqual([[snapshot.id, 'replikit-race-1']]);
    await other.deleteSnapshot(snapshot);
    expect(await other.listSnapshots(vm.id)).toEqual([]);
  });
});
