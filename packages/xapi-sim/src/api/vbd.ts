import { NULL_REF } from '../ids.js';
import type { Wire } from '../model/wire.js';
import type { SimState } from '../sim-state.js';
import { fault } from '../xapi-fault.js';
import { type MethodTable, str } from './registry.js';

const VBD_CTOR = [
  'bootable',
  'mode',
  'type',
  'unpluggable',
  'empty',
  'other_config',
  'qos_algorithm_type',
  'qos_algorithm_params',
];

/** Creates a VBD joining a VM and a VDI (or empty), keeping `VM.VBDs` and `VDI.VBDs` in step. */
export function newVbd(sim: SimState, rec: Record<string, Wire>): string {
  const vm = rec.VM;
  const vdi = rec.VDI ?? NULL_REF;
  if (typeof vm !== 'string' || typeof vdi !== 'string') throw fault('FIELD_TYPE_ERROR', 'VM');
  sim.db.get('VM', vm);
  if (vdi !== NULL_REF) sim.db.get('VDI', vdi);
  let userdevice = typeof rec.userdevice === 'string' ? rec.userdevice : 'autodetect';
  const used = new Set(
    sim.db.field<string[]>('VM', vm, 'VBDs').map((v) => sim.db.field<string>('VBD', v, 'userdevice')),
  );
  if (userdevice === 'autodetect') {
    let n = 0;
    while (used.has(String(n))) n++;
    userdevice = String(n);
  } else if (used.has(userdevice)) {
    throw fault('DEVICE_ALREADY_EXISTS', userdevice);
  }
  const fields: Record<string, Wire> = { VM: vm, VDI: vdi, userdevice, empty: vdi === NULL_REF };
  for (const k of VBD_CTOR) if (rec[k] !== undefined) fields[k] = rec[k];
  const ref = sim.db.create('VBD', fields);
  sim.db.addToSet('VM', vm, 'VBDs', ref);
  if (vdi !== NULL_REF) sim.db.addToSet('VDI', vdi, 'VBDs', ref);
  return ref;
}

/** Removes a VBD and its back-references. */
export function dropVbd(sim: SimState, vbd: string): void {
  const rec = sim.db.get('VBD', vbd);
  sim.db.destroy('VBD', vbd);
  sim.db.removeFromSet('VM', rec.VM as string, 'VBDs', vbd);
  if (rec.VDI !== NULL_REF) sim.db.removeFromSet('VDI', rec.VDI as string, 'VBDs', vbd);
}

/** `VM_BAD_POWER_STATE [vm, running, actual]` unless the VM runs (hot-plug needs a running VM). */
function checkRunning(sim: SimState, vm: string): void {
  const power = sim.db.field<string>('VM', vm, 'power_state');
  if (power !== 'Running') throw fault('VM_BAD_POWER_STATE', vm, 'running', power.toLowerCase());
}

/**
 * `VDI_IN_USE [vdi, op]` when the VDI is attached through another VBD and one of the two is
 * read-write (a non-sharable VDI has one writer or only readers), or while it lingers after an
 * unplug (XAPI's race with tapdisk, `sim.faults.unplugRace`).
 */
export function checkVdiFree(sim: SimState, vbd: string, vdi: string, mode: string, op = 'plug'): void {
  if (sim.faults.isLingering(vdi)) throw fault('VDI_IN_USE', vdi, op);
  if (sim.db.field<boolean>('VDI', vdi, 'sharable')) return;
  for (const other of sim.db.field<string[]>('VDI', vdi, 'VBDs')) {
    if (other === vbd || !sim.db.field<boolean>('VBD', other, 'currently_attached')) continue;
    if (mode === 'RW' || sim.db.field<string>('VBD', other, 'mode') === 'RW') throw fault('VDI_IN_USE', vdi, op);
  }
}

/** `VBD.create`, `destroy`, `plug`, `unplug`. */
export function registerVbd(table: MethodTable): void {
  table.add({
    name: 'VBD.create',
    arity: 1,
    async: true,
    run: ({ sim }, a) => {
      const rec = a[0];
      if (typeof rec !== 'object' || Array.isArray(rec)) throw fault('FIELD_TYPE_ERROR', 'args');
      return newVbd(sim, rec);
    },
  });
  table.add({
    name: 'VBD.destroy',
    arity: 1,
    async: true,
    run: ({ sim }, a) => {
      const vbd = str(a, 0);
      if (sim.db.field<boolean>('VBD', vbd, 'currently_attached')) throw fault('DEVICE_ALREADY_ATTACHED', vbd);
      dropVbd(sim, vbd);
    },
  });
  table.add({
    name: 'VBD.plug',
    arity: 1,
    async: true,
    run: async ({ sim }, a) => {
      const vbd = str(a, 0);
      const rec = sim.db.get('VBD', vbd);
      const vm = rec.VM as string;
      checkRunning(sim, vm);
      if (rec.currently_attached === true) throw fault('DEVICE_ALREADY_ATTACHED', vbd);
      if (rec.VDI !== NULL_REF) checkVdiFree(sim, vbd, rec.VDI as string, rec.mode as string);
      sim.db.update('VBD', vbd, { currently_attached: true });
      await sim.abd?.devicesChanged(vm);
    },
  });
  table.add({
    name: 'VBD.unplug',
    arity: 1,
    async: true,
    run: async ({ sim }, a) => {
      const vbd = str(a, 0);
      const vm = sim.db.field<string>('VBD', vbd, 'VM');
      checkRunning(sim, vm);
      if (!sim.db.field<boolean>('VBD', vbd, 'currently_attached')) throw fault('DEVICE_ALREADY_DETACHED', vbd);
      sim.db.update('VBD', vbd, { currently_attached: false });
      // A running appliance stops seeing the disk before the call returns.
      await sim.abd?.devicesChanged(vm);
      const vdi = sim.db.field<string>('VBD', vbd, 'VDI');
      if (vdi !== NULL_REF) sim.faults.unplugged(vdi);
    },
  });
}
