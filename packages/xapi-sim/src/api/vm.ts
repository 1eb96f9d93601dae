import { randomUUID } from 'node:crypto';
import { NULL_REF } from '../ids.js';
import { RECORD_DEFAULTS } from '../model/defaults.js';
import type { XRecord } from '../model/wire.js';
import type { SimState } from '../sim-state.js';
import { fault } from '../xapi-fault.js';
import { type MethodTable, str, strSet } from './registry.js';
import { checkVdiFree } from './vbd.js';
import { checkNotBlocked, checkPower, deleteVm, duplicateVm, newVif, powerOff, powerOn } from './vm-ops.js';

const CTOR_SKIP = new Set([
  'uuid',
  'power_state',
  'VBDs',
  'VIFs',
  'snapshots',
  'snapshot_of',
  'is_a_snapshot',
  'resident_on',
  'domid',
  'is_control_domain',
  'allowed_operations',
  'current_operations',
  'children',
  'consoles',
]);

function checkNotControlDomain(sim: SimState, vm: string): void {
  if (sim.db.field<boolean>('VM', vm, 'is_control_domain')) {
    throw fault('OPERATION_NOT_ALLOWED', 'This operation is not allowed on the control domain');
  }
}

/** The `VM` messages: create, destroy, power, snapshot, clone, copy; and `VIF.create/destroy`. */
export function registerVm(table: MethodTable): void {
  table.add({
    name: 'VM.create',
    arity: 1,
    async: true,
    run: ({ sim }, a) => {
      const rec = a[0];
      if (typeof rec !== 'object' || Array.isArray(rec)) throw fault('FIELD_TYPE_ERROR', 'args');
      const known = RECORD_DEFAULTS.VM();
      const fields: XRecord = {};
      for (const [k, v] of Object.entries(rec)) if (k in known && !CTOR_SKIP.has(k)) fields[k] = v;
      const other = { ...((fields.other_config as Record<string, string> | undefined) ?? {}) };
      other.mac_seed ??= randomUUID();
      return sim.db.create('VM', { ...fields, other_config: other });
    },
  });
  table.add({
    name: 'VM.destroy',
    arity: 1,
    async: true,
    run: async ({ sim }, a) => {
      const vm = str(a, 0);
      checkNotControlDomain(sim, vm);
      checkNotBlocked(sim, vm, 'destroy');
      checkPower(sim, vm, 'Halted', 'Suspended');
      await sim.abd?.stop(vm);
      deleteVm(sim, vm);
    },
  });
  table.add({
    name: 'VM.start',
    arity: 3,
    async: true,
    run: async ({ sim }, a) => {
      const vm = str(a, 0);
      checkNotControlDomain(sim, vm);
      if (sim.db.field<boolean>('VM', vm, 'is_a_template')) throw fault('VM_IS_TEMPLATE', vm);
      checkNotBlocked(sim, vm, 'start');
      checkPower(sim, vm, 'Halted');
      for (const vbd of sim.db.field<string[]>('VM', vm, 'VBDs')) {
        const rec = sim.db.get('VBD', vbd);
        if (rec.empty !== true && rec.VDI !== NULL_REF)
          checkVdiFree(sim, vbd, rec.VDI as string, rec.mode as string, 'start');
      }
      // An appliance's configuration and address are checked before anything changes.
      const abd = sim.abd?.isAppliance(vm) === true ? sim.abd : undefined;
      abd?.claim(vm);
      powerOn(sim, vm);
      if (abd === undefined) return;
      try {
        await abd.launch(vm);
      } catch (error) {
        powerOff(sim, vm);
        throw error;
      }
    },
  });
  for (const [name, states] of [
    ['VM.shutdown', ['Running', 'Paused', 'Suspended']],
    ['VM.clean_shutdown', ['Running']],
    ['VM.hard_shutdown', ['Running', 'Paused', 'Suspended']],
  ] as const) {
    table.add({
      name,
      arity: 1,
      async: true,
      run: async ({ sim }, a) => {
        const vm = str(a, 0);
        checkNotControlDomain(sim, vm);
        checkNotBlocked(sim, vm, name.slice(3));
        checkPower(sim, vm, ...states);
        await sim.abd?.stop(vm);
        powerOff(sim, vm);
      },
    });
  }
  table.add({
    name: 'VM.snapshot',
    arity: 3,
    minArity: 2,
    async: true,
    run: ({ sim }, a) => {
      const vm = str(a, 0);
      checkNotControlDomain(sim, vm);
      if (sim.db.field<boolean>('VM', vm, 'is_a_snapshot')) throw fault('VM_IS_SNAPSHOT', vm);
      checkNotBlocked(sim, vm, 'snapshot');
      const ignoreVdis = a.length > 2 ? strSet(a, 2, 'ignore_vdis') : [];
      return duplicateVm(sim, vm, str(a, 1), 'snapshot', { ignoreVdis });
    },
  });
  table.add({
    name: 'VM.clone',
    arity: 2,
    async: true,
    run: ({ sim }, a) => {
      const vm = str(a, 0);
      checkNotBlocked(sim, vm, 'clone');
      checkPower(sim, vm, 'Halted');
      return duplicateVm(sim, vm, str(a, 1), 'clone');
    },
  });
  table.add({
    name: 'VM.copy',
    arity: 3,
    async: true,
    run: ({ sim }, a) => {
      const vm = str(a, 0);
      checkNotBlocked(sim, vm, 'copy');
      checkPower(sim, vm, 'Halted');
      const sr = str(a, 2);
      if (sr !== NULL_REF) sim.db.get('SR', sr);
      return duplicateVm(sim, vm, str(a, 1), 'copy', sr === NULL_REF ? {} : { sr });
    },
  });
  table.add({
    name: 'VM.get_allowed_VBD_devices',
    arity: 1,
    run: ({ sim }, a) => {
      const used = new Set(
        sim.db.field<string[]>('VM', str(a, 0), 'VBDs').map((v) => sim.db.field<string>('VBD', v, 'userdevice')),
      );
      return Array.from({ length: 16 }, (_, i) => String(i)).filter((d) => !used.has(d));
    },
  });
  table.add({
    name: 'VM.update_allowed_operations',
    arity: 1,
    async: true,
    run: ({ sim }, a) => void sim.db.get('VM', str(a, 0)),
  });
  table.add({
    name: 'VIF.create',
    arity: 1,
    async: true,
    run: ({ sim }, a) => {
      const rec = a[0];
      if (typeof rec !== 'object' || Array.isArray(rec)) throw fault('FIELD_TYPE_ERROR', 'args');
      return newVif(sim, rec);
    },
  });
  table.add({
    name: 'VIF.destroy',
    arity: 1,
    async: true,
    run: ({ sim }, a) => {
      const vif = str(a, 0);
      const rec = sim.db.get('VIF', vif);
      sim.db.destroy('VIF', vif);
      sim.db.removeFromSet('VM', rec.VM as string, 'VIFs', vif);
      sim.db.removeFromSet('network', rec.network as string, 'VIFs', vif);
    },
  });
  table.add({ name: 'SR.scan', arity: 1, async: true, run: ({ sim }, a) => void sim.db.get('SR', str(a, 0)) });
}
