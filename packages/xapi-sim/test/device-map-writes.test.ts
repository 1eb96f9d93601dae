import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { populateDemo, XenAbdDriver } from '../src/index.js';
import { makeAppliance } from './helpers/appliance.js';
import { type SimFixture, startSim } from './helpers/sim-fixture.js';

/*
 * Issue 17, the ABD crash matrix's `disk … is not plugged into appliance …` after a resume: two
 * plugs/unplugs of one appliance close together (a killed run's late unplug and the resumed run's
 * plug, or a reader's unplug and a writer's plug) each rewrote the device map with what they saw
 * when they began. The rewrites (a temp file, fsync, rename) raced, and the older map could land
 * last: the agent then refused a disk that was plugged. Here the first rewrite is held until the
 * second one is done, the order a loaded machine's fsync can produce.
 */

const gate = vi.hoisted(() => ({
  /** When set, the next device-map rewrite waits for this before it writes. */
  hold: undefined as Promise<void> | undefined,
  /** Resolves when the held rewrite has entered. */
  entered: undefined as (() => void) | undefined,
  /** Rewrites of a device map in progress (entered, not finished). */
  inFlight: new Set<Promise<void>>(),
}));

vi.mock('@replikit/core/internal', async (original) => {
  const actual = await original<typeof import('@replikit/core/internal')>();
  return {
    ...actual,
    writeFileAtomic: (path: string, data: string | Uint8Array) => {
      if (!path.endsWith('devices.json')) return actual.writeFileAtomic(path, data);
      const hold = gate.hold;
      gate.hold = undefined;
      if (hold) gate.entered?.();
      const write = (hold ?? Promise.resolve()).then(() => actual.writeFileAtomic(path, data));
      gate.inFlight.add(write);
      void write.finally(() => gate.inFlight.delete(write)).catch(() => undefined);
      return write;
    },
  };
});

const MiB = 1024 * 1024;
let fx: SimFixture;

beforeEach(async () => {
  fx = await startSim();
});
afterEach(async () => {
  await fx.close();
});

describe('the device map of an appliance', () => {
  it('ends with what is plugged when an unplug and a plug rewrite it at once, whatever order the rewrites finish in', async () => {
    const { template } = await populateDemo(fx.sim);
    const abd = await makeAppliance(fx, template, 'abd-map');
    const disk = async (userdevice: string) => {
      const vdi = await fx.call<string>('VDI.create', {
        name_label: `disk ${userdevice}`,
        SR: fx.sim.refs.sr,
        virtual_size: 4 * MiB,
        type: 'user',
      });
      const vbd = await fx.call<string>('VBD.create', { VM: abd.vm, VDI: vdi, userdevice, mode: 'RW', type: 'Disk' });
      return { vbd, uuid: await fx.call<string>('VDI.get_uuid', vdi) };
    };
    const first = await disk('1');
    await fx.call('VM.start', abd.vm, false, false);
    const second = await disk('2');
    const folder = fx.sim.appliance(abd.vm)!.folder;
    const agentView = new XenAbdDriver({ root: folder });
    expect((await agentView.getVM(abd.uuid)).disks.map((d) => d.id)).toEqual([first.uuid]);

    // The unplug's rewrite is held; the plug's starts while it waits, and is let finish first.
    let release!: () => void;
    gate.hold = new Promise<void>((resolve) => {
      release = resolve;
    });
    const entered = new Promise<void>((resolve) => {
      gate.entered = resolve;
    });
    const unplug = fx.call('VBD.unplug', first.vbd);
    await entered;
    const plug = fx.call('VBD.plug', second.vbd);
    // The plug reaches the pool (its record says attached) while the unplug's rewrite is held.
    let token = '';
    for (;;) {
      const attached = await fx.call<boolean>('VBD.get_currently_attached', second.vbd);
      if (attached) break;
      token = (await fx.call<{ token: string }>('event.from', ['vbd'], token, 5)).token;
    }
    const heldOne = [...gate.inFlight][0];
    await Promise.all([...gate.inFlight].filter((w) => w !== heldOne).map((w) => w.catch(() => undefined)));
    release();
    await Promise.all([unplug, plug]);

    expect(fx.sim.appliance(abd.vm)!.folder).toBe(folder);
    const seen = (await agentView.getVM(abd.uuid)).disks.map((d) => d.id);
    expect(seen, `device map ${join(folder, 'devices.json')}`).toEqual([second.uuid]);
  });
});
