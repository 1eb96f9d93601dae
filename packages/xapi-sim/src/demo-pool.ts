import type { XapiSim } from './simulator.js';

/** What {@link populateDemo} made. */
export interface DemoPool {
  /** The VMs with data (name → ref). */
  readonly vms: Record<string, string>;
  /** The appliance template's ref. */
  readonly template: string;
}

const MiB = 1024 * 1024;

/**
 * Fills a simulator with a small demo pool: a second SR, three VMs with CBT-enabled disks holding
 * some data (one running), and the delegate appliance's template (`other_config`
 * `replikit:abd=template`, a VIF on the management network): a clone of it with its address and
 * key in `xenstore_data` runs a `replikit-agent` when started (see the README).
 */
export async function populateDemo(sim: XapiSim): Promise<DemoPool> {
  const session = (await sim.call('session.login_with_password', 'root', sim.credentials.password)) as string;
  const call = (method: string, ...args: unknown[]) => sim.call(method, session, ...args);
  const second = await sim.addSr('Local storage (second host)');
  const vms: Record<string, string> = {};
  const specs = [
    { name: 'web-01', sr: sim.refs.sr, disks: [32 * MiB], run: true },
    { name: 'db-01', sr: sim.refs.sr, disks: [64 * MiB, 16 * MiB], run: false },
    { name: 'files-01', sr: second, disks: [48 * MiB], run: false },
  ];
  for (const spec of specs) {
    const vm = (await call('VM.create', { name_label: spec.name, other_config: { demo: 'true' } })) as string;
    vms[spec.name] = vm;
    for (const [i, size] of spec.disks.entries()) {
      const vdi = (await call('VDI.create', {
        name_label: `${spec.name} disk ${i}`,
        SR: spec.sr,
        virtual_size: size,
        type: 'user',
      })) as string;
      await call('VBD.create', {
        VM: vm,
        VDI: vdi,
        userdevice: String(i),
        mode: 'RW',
        type: 'Disk',
        bootable: i === 0,
      });
      await call('VDI.enable_cbt', vdi);
    }
    await call('VIF.create', { VM: vm, network: sim.refs.network, device: '0', MAC: '' });
    await call('VM.start', vm, false, false);
    for (const i of spec.disks.keys()) {
      const text = new TextEncoder().encode(`${spec.name} disk ${i}: demo data\n`);
      for (let block = 0; block < 4; block++) await sim.guestWrite(vm, String(i), block * 4 * MiB, text);
    }
    if (!spec.run) await call('VM.clean_shutdown', vm);
  }
  const template = (await call('VM.create', {
    name_label: 'replikit delegate appliance',
    is_a_template: true,
    other_config: { 'replikit:abd': 'template' },
  })) as string;
  // Its clones come with VIF 0 on the management network: they need only their xenstore_data.
  await call('VIF.create', { VM: template, network: sim.refs.network, device: '0', MAC: '' });
  await call('session.logout');
  return { vms, template };
}
