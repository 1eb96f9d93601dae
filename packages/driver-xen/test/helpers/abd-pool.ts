import { randomInt } from 'node:crypto';
import { populateDemo } from '@replikit/xapi-sim';
import { XenConnection } from '../../src/index.js';
import { PASSWORD_ENV, startPool, type TestPool } from './xen-pool.js';

const MiB = 1024 * 1024;

/** A simulated pool with the demo's appliance image, and helpers to look at what an ABD left behind. */
export interface AbdPool extends TestPool {
  /** Opens a XAPI connection as the driver would (the test closes it). */
  connect(): Promise<XenConnection>;
  /** Addresses for `abd.ips`: loopback addresses of this run (parallel runs do not meet). */
  readonly ips: string[];
  /** The appliance VMs (marked `replikit:abd=appliance`) with their power state. */
  appliances(): Promise<Array<{ ref: string; uuid: string; power: string }>>;
  /** VBDs plugged into any appliance now. */
  pluggedIntoAppliances(): Promise<string[]>;
  /** VBD records of any appliance (plugged or not), besides the ones an appliance brought. */
  applianceVbds(): Promise<string[]>;
  /** A VDI of `size` bytes on the default SR, with its uuid. */
  makeVdi(size?: number): Promise<{ ref: string; uuid: string }>;
}

/** Starts a pool with the demo's VMs and its appliance template. */
export async function startAbdPool(): Promise<AbdPool> {
  const pool = await startPool();
  await populateDemo(pool.sim);
  const base = `127.${randomInt(64, 250)}.${randomInt(1, 250)}`;
  const ips = [2, 3, 4].map((n) => `${base}.${n}`);
  const appliances = async () => {
    const all = await pool.call<Record<string, Record<string, unknown>>>('VM.get_all_records');
    return Object.entries(all)
      .filter(([, vm]) => (vm.other_config as Record<string, string>)['replikit:abd'] === 'appliance')
      .map(([ref, vm]) => ({ ref, uuid: vm.uuid as string, power: vm.power_state as string }));
  };
  const vbdsOf = async () => {
    const refs = (await appliances()).map((a) => a.ref);
    const all = await pool.call<Record<string, Record<string, unknown>>>('VBD.get_all_records');
    return Object.entries(all).filter(([, vbd]) => refs.includes(vbd.VM as string));
  };
  return {
    ...pool,
    ips,
    connect: () =>
      XenConnection.open({
        url: pool.sim.url,
        user: 'root',
        passwordEnv: PASSWORD_ENV,
        allowUnauthorized: pool.sim.url.startsWith('https'),
        onWarning: () => undefined,
      }),
    appliances,
    pluggedIntoAppliances: async () =>
      (await vbdsOf()).filter(([, vbd]) => vbd.currently_attached === true).map(([ref]) => ref),
    applianceVbds: async () => (await vbdsOf()).map(([ref]) => ref),
    async makeVdi(size = 4 * MiB) {
      const ref = await pool.call<string>('VDI.create', {
        name_label: 'abd test disk',
        SR: pool.sim.refs.sr,
        virtual_size: size,
        type: 'user',
      });
      return { ref, uuid: await pool.call<string>('VDI.get_uuid', ref) };
    },
  };
}
