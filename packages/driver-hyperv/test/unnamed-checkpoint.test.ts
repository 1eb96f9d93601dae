import { DriverError } from '@replikit/core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { HyperVDriver, type PowerShellLink, type PsScript, SOURCE_SCRIPTS } from '../src/index.js';
import { type SimHost, startSimHost } from './helpers/sim-host.js';

const MiB = 2 ** 20;

/**
 * The simulated host's link, except that the first `Rename-VMSnapshot` never reaches the host, as
 * when the engine is killed between `CreateSnapshot` (which gives the checkpoint Hyper-V's default
 * name) and the rename to the run's label.
 */
function dyingBeforeRename(link: PowerShellLink): PowerShellLink {
  let died = false;
  return new Proxy(link, {
    get(target, key) {
      if (key !== 'call') return Reflect.get(target, key);
      return async (script: PsScript, params?: Record<string, unknown>, options?: { timeoutMs?: number }) => {
        if (script.name === 'rename-checkpoint' && !died) {
          died = true;
          throw new DriverError('the engine died here (simulated)');
        }
        return target.call(script, params, options);
      };
    },
  });
}

describe('a recovery checkpoint a killed run took and never named', { timeout: 180_000 }, () => {
  let sim: SimHost;
  beforeEach(async () => {
    sim = await startSimHost();
  });
  afterEach(async () => {
    await sim.close();
  });

  // A kill between CreateSnapshot and the rename: the resumed run looks for its snapshot by label,
  // did not find the unnamed checkpoint, took another, and the first one stayed on the source VM.
  it('gets the run label at the next look, so the resumed run adopts it; no second checkpoint is taken', async () => {
    await sim.makeVM('un', [4 * MiB]);
    const first = new HyperVDriver({ link: dyingBeforeRename(sim.link), sharedLink: true });
    const vm = await first.getVM('un');
    await expect(first.snapshot(vm.id, 'replikit-run-1')).rejects.toThrow(/died/);
    // The resumed run, a new process: it lists the VM's snapshots and looks for its label.
    const next = sim.sharedDriver();
    const found = (await next.listSnapshots(vm.id)).filter((s) => s.label === 'replikit-run-1');
    expect(found).toHaveLength(1);
    expect(await next.listSnapshots(vm.id)).toHaveLength(1);
    await next.deleteSnapshot(found[0]!);
    expect(await next.listSnapshots(vm.id)).toEqual([]);
  });

  it('leaves alone a checkpoint another product took meanwhile when it cannot tell which is replikit’s', async () => {
    await sim.makeVM('two', [4 * MiB]);
    const first = new HyperVDriver({ link: dyingBeforeRename(sim.link), sharedLink: true });
    const vm = await first.getVM('two');
    await expect(first.snapshot(vm.id, 'replikit-run-2')).rejects.toThrow(/died/);
    // Another product's recovery checkpoint of the same VM (a backup tool, through WMI), unnamed too.
    const create = SOURCE_SCRIPTS.find((s) => s.name === 'create-recovery-checkpoint')!;
    const [made] = await sim.link.call<{ ReturnValue: number }>(create, { vmId: vm.id });
    expect(made?.ReturnValue).toBe(0);
    const next = sim.sharedDriver();
    const names = (await next.listSnapshots(vm.id)).map((s) => s.label);
    expect(names).toHaveLength(2);
    expect(names).not.toContain('replikit-run-2');
  });
});
