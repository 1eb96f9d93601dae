import { randomUUID } from 'node:crypto';
import { NULL_REF, newUuid, xapiDate } from '../ids.js';
import type { XRecord } from '../model/wire.js';
import type { SimState } from '../sim-state.js';
import { fault } from '../xapi-fault.js';
import { duplicateVdi } from './storage-ops.js';
import { dropVbd, newVbd } from './vbd.js';

/** Fails with `OPERATION_BLOCKED [vm, reason]` if `op` is in the VM's `blocked_operations`. */
export function checkNotBlocked(sim: SimState, vm: string, op: string): void {
  const reason = sim.db.field<Record<string, string>>('VM', vm, 'blocked_operations')[op];
  if (reason !== undefined) throw fault('OPERATION_BLOCKED', vm, reason);
}

/** Fails with `VM_BAD_POWER_STATE [vm, expected, actual]` unless the VM is in one of `states`. */
export function checkPower(sim: SimState, vm: string, ...states: string[]): void {
  const actual = sim.db.field<string>('VM', vm, 'power_state');
  if (!states.includes(actual)) throw fault('VM_BAD_POWER_STATE', vm, states[0]!.toLowerCase(), actual.toLowerCase());
}

/**
 * A new VM from `vm`: its disks snapshotted, cloned or copied (all under one storage turn, so a
 * snapshot is of one instant), its VIFs copied, `blocked_operations` emptied.
 */
export async function duplicateVm(
  sim: SimState,
  vm: string,
  name: string,
  kind: 'snapshot' | 'clone' | 'copy',
  options: { sr?: string; ignoreVdis?: readonly string[] } = {},
): Promise<string> {
  const src = sim.db.get('VM', vm);
  const isSnap = kind === 'snapshot';
  const disks: { vbd: XRecord; vdi: string }[] = [];
  for (const vbd of src.VBDs as string[]) {
    const rec = sim.db.get('VBD', vbd);
    const vdi = rec.VDI as string;
    if (rec.type === 'CD' || vdi === NULL_REF || options.ignoreVdis?.includes(vdi)) continue;
    disks.push({ vbd: rec, vdi });
  }
  const copies = await sim.serial(async () => {
    const out: string[] = [];
    for (const d of disks) {
      const sr = options.sr ?? sim.db.field<string>('VDI', d.vdi, 'SR');
      out.push(await duplicateVdi(sim, d.vdi, sr, kind));
    }
    return out;
  });
  const otherConfig = { ...(src.other_config as Record<string, string>) };
  if (!isSnap) otherConfig.mac_seed = randomUUID();
  const ref = sim.db.create('VM', {
    ...src,
    uuid: newUuid(),
    name_label: name,
    power_state: 'Halted',
    resident_on: NULL_REF,
    domid: -1,
    VBDs: [],
    VIFs: [],
    snapshots: [],
    children: [],
    consoles: [],
    allowed_operations: [],
    current_operations: {},
    blocked_operations: {},
    other_config: otherConfig,
    is_a_snapshot: isSnap,
    is_a_template: isSnap ? true : (src.is_a_template as boolean),
    snapshot_of: isSnap ? vm : NULL_REF,
    snapshot_time: isSnap ? xapiDate() : '19700101T00:00:00Z',
    parent: NULL_REF,
  });
  disks.forEach((d, i) => {
    newVbd(sim, { ...d.vbd, VM: ref, VDI: copies[i]!, userdevice: d.vbd.userdevice! });
  });
  for (const vif of src.VIFs as string[]) {
    const rec = sim.db.get('VIF', vif);
    newVif(sim, { ...rec, VM: ref, currently_attached: false });
  }
  if (isSnap) sim.db.addToSet('VM', vm, 'snapshots', ref);
  return ref;
}

/** Creates a VIF, keeping `VM.VIFs` and `network.VIFs` in step. */
export function newVif(sim: SimState, rec: XRecord): string {
  const vm = rec.VM as string;
  const network = rec.network as string;
  sim.db.get('VM', vm);
  sim.db.get('network', network);
  const fields: XRecord = {};
  for (const k of [
    'device',
    'MAC',
    'MTU',
    'other_config',
    'qos_algorithm_type',
    'qos_algorithm_params',
    'locking_mode',
  ]) {
    if (rec[k] !== undefined) fields[k] = rec[k];
  }
  const ref = sim.db.create('VIF', { ...fields, VM: vm, network });
  sim.db.addToSet('VM', vm, 'VIFs', ref);
  sim.db.addToSet('network', network, 'VIFs', ref);
  return ref;
}

/** Removes a VM with its VBDs and VIFs; the VDIs stay. */
export function deleteVm(sim: SimState, vm: string): void {
  const rec = sim.db.get('VM', vm);
  for (const vbd of rec.VBDs as string[]) dropVbd(sim, vbd);
  for (const vif of rec.VIFs as string[]) {
    const network = sim.db.field<string>('VIF', vif, 'network');
    sim.db.destroy('VIF', vif);
    sim.db.removeFromSet('network', network, 'VIFs', vif);
  }
  sim.db.destroy('VM', vm);
  if (rec.snapshot_of !== NULL_REF) sim.db.removeFromSet('VM', rec.snapshot_of as string, 'snapshots', vm);
  for (const snap of rec.snapshots as string[]) {
    if (sim.db.has('VM', snap)) sim.db.update('VM', snap, { snapshot_of: NULL_REF });
  }
}

/** Moves a VM to Running: resident on the master, its disks and VIFs attached. */
export function powerOn(sim: SimState, vm: string): void {
  sim.db.update('VM', vm, { power_state: 'Running', resident_on: sim.refs.host, domid: sim.nextDomid() });
  for (const vbd of sim.db.field<string[]>('VM', vm, 'VBDs')) {
    if (!sim.db.field<boolean>('VBD', vbd, 'empty')) sim.db.update('VBD', vbd, { currently_attached: true });
  }
  for (const vif of sim.db.field<string[]>('VM', vm, 'VIFs')) sim.db.update('VIF', vif, { currently_attached: true });
  sim.db.addToSet('host', sim.refs.host, 'resident_VMs', vm);
}

/** Moves a VM to Halted, detaching everything. */
export function powerOff(sim: SimState, vm: string): void {
  for (const vbd of sim.db.field<string[]>('VM', vm, 'VBDs')) {
    if (sim.db.field<boolean>('VBD', vbd, 'currently_attached'))
      sim.db.update('VBD', vbd, { currently_attached: false });
  }
  for (const vif of sim.db.field<string[]>('VM', vm, 'VIFs')) sim.db.update('VIF', vif, { currently_attached: false });
  sim.db.removeFromSet('host', sim.refs.host, 'resident_VMs', vm);
  sim.db.update('VM', vm, { power_state: 'Halted', resident_on: NULL_REF, domid: -1 });
}
