import type { Wire } from '../model/wire.js';
import { removeVdiFile, resizeVdiFile } from '../storage/vdi-file.js';
import { fault } from '../xapi-fault.js';
import { int, type MethodTable, str } from './registry.js';
import { checkSrSpace, deleteVdi, duplicateVdi, newVdi } from './storage-ops.js';

const isAttached = (sim: import('../sim-state.js').SimState, vdi: string) =>
  sim.db.field<string[]>('VDI', vdi, 'VBDs').some((v) => sim.db.field<boolean>('VBD', v, 'currently_attached'));

/** The `VDI` messages: create, destroy, snapshot, clone, copy, resize, CBT. */
export function registerVdi(table: MethodTable): void {
  table.add({
    name: 'VDI.create',
    arity: 1,
    async: true,
    run: ({ sim }, a) => {
      const rec = a[0];
      if (typeof rec !== 'object' || Array.isArray(rec)) throw fault('FIELD_TYPE_ERROR', 'args');
      const size = typeof rec.virtual_size === 'string' ? Number(rec.virtual_size) : rec.virtual_size;
      const sr = rec.SR;
      if (typeof sr !== 'string') throw fault('FIELD_TYPE_ERROR', 'SR');
      const fields: Record<string, Wire> = {};
      for (const k of [
        'name_label',
        'name_description',
        'type',
        'sharable',
        'read_only',
        'other_config',
        'sm_config',
        'tags',
        'xenstore_data',
      ]) {
        if (rec[k] !== undefined) fields[k] = rec[k];
      }
      // The SM rounds the size up to its granularity; the record shows the rounded size.
      const step = sim.vdiSizeStep;
      const rounded = typeof size === 'number' && step > 1 ? Math.ceil(size / step) * step : size;
      return sim.serial(() => newVdi(sim, sr, { ...fields, virtual_size: rounded as Wire }));
    },
  });
  table.add({
    name: 'VDI.destroy',
    arity: 1,
    async: true,
    run: ({ sim }, a) => sim.serial(() => deleteVdi(sim, str(a, 0))),
  });
  // A snapshot and a clone stay in the VDI's own SR; only their kind differs.
  for (const kind of ['snapshot', 'clone'] as const) {
    table.add({
      name: `VDI.${kind}`,
      arity: 2,
      minArity: 1,
      async: true,
      run: ({ sim }, a) => {
        const vdi = str(a, 0);
        return sim.serial(() => duplicateVdi(sim, vdi, sim.db.field<string>('VDI', vdi, 'SR'), kind));
      },
    });
  }
  table.add({
    name: 'VDI.copy',
    arity: 4,
    minArity: 2,
    async: true,
    run: ({ sim }, a) => {
      const vdi = str(a, 0);
      const sr = str(a, 1);
      if (a.length > 3 && str(a, 3) !== 'OpaqueRef:NULL') {
        throw fault('OPERATION_NOT_ALLOWED', 'VDI.copy into an existing VDI is not simulated yet');
      }
      return sim.serial(() => duplicateVdi(sim, vdi, sr, 'copy'));
    },
  });
  for (const name of ['VDI.resize', 'VDI.resize_online']) {
    table.add({
      name,
      arity: 2,
      async: true,
      run: ({ sim }, a) =>
        sim.serial(async () => {
          const vdi = str(a, 0);
          const size = int(a, 1, 'size');
          const rec = sim.db.get('VDI', vdi);
          const old = rec.virtual_size as number;
          if (size < old) throw fault('VDI_SIZE_INVALID', vdi, 'shrinking is not supported');
          checkSrSpace(sim, rec.SR as string, size - old);
          await resizeVdiFile(sim.vdiPath(vdi), size);
          sim.cbt.resize(vdi, size);
          sim.db.update('VDI', vdi, { virtual_size: size });
          const used = sim.db.field<number>('SR', rec.SR as string, 'virtual_allocation');
          sim.db.update('SR', rec.SR as string, { virtual_allocation: used + size - old });
        }),
    });
  }
  table.add({
    name: 'VDI.enable_cbt',
    arity: 1,
    async: true,
    run: ({ sim }, a) => {
      const vdi = str(a, 0);
      const rec = sim.db.get('VDI', vdi);
      if (rec.is_a_snapshot === true) throw fault('VDI_IS_A_SNAPSHOT', vdi);
      if (rec.type === 'cbt_metadata') throw fault('VDI_INCOMPATIBLE_TYPE', vdi, 'cbt_metadata');
      if (rec.on_boot === 'reset') throw fault('VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION');
      sim.cbt.enable(vdi, rec.virtual_size as number);
      if (rec.cbt_enabled !== true) sim.db.update('VDI', vdi, { cbt_enabled: true });
    },
  });
  table.add({
    name: 'VDI.disable_cbt',
    arity: 1,
    async: true,
    run: ({ sim }, a) => {
      const vdi = str(a, 0);
      const rec = sim.db.get('VDI', vdi);
      if (rec.is_a_snapshot === true) throw fault('VDI_IS_A_SNAPSHOT', vdi);
      sim.cbt.disable(vdi);
      if (rec.cbt_enabled !== false) sim.db.update('VDI', vdi, { cbt_enabled: false });
    },
  });
  table.add({
    name: 'VDI.data_destroy',
    arity: 1,
    async: true,
    run: ({ sim }, a) =>
      sim.serial(async () => {
        const vdi = str(a, 0);
        const rec = sim.db.get('VDI', vdi);
        if (rec.type === 'cbt_metadata') return;
        if (rec.is_a_snapshot !== true || rec.cbt_enabled !== true) throw fault('VDI_NO_CBT_METADATA', vdi);
        if (isAttached(sim, vdi) || sim.faults.isLingering(vdi)) throw fault('VDI_IN_USE', vdi, 'data_destroy');
        await removeVdiFile(sim.vdiPath(vdi));
        const sr = rec.SR as string;
        const used = sim.db.field<number>('SR', sr, 'virtual_allocation');
        sim.db.update('SR', sr, { virtual_allocation: used - (rec.virtual_size as number) });
        sim.db.update('VDI', vdi, { type: 'cbt_metadata', physical_utilisation: 0 });
      }),
  });
  table.add({
    name: 'VDI.get_nbd_info',
    arity: 1,
    run: ({ sim, session }, a) => {
      const vdi = str(a, 0);
      const rec = sim.db.get('VDI', vdi);
      if (rec.type === 'cbt_metadata') throw fault('VDI_INCOMPATIBLE_TYPE', vdi, 'cbt_metadata');
      const nbd = sim.nbd;
      const served = sim.db
        .entries('network')
        .some(
          ([, n]) =>
            (n.purpose as string[]).some((p) => p === 'nbd' || p === 'insecure_nbd') && (n.PIFs as string[]).length > 0,
        );
      if (nbd === undefined || !served) return [];
      return [
        {
          exportname: `/${rec.uuid as string}?session_id=${session}`,
          address: nbd.address,
          port: nbd.port,
          cert: nbd.cert,
          subject: nbd.subject,
        },
      ];
    },
  });
  table.add({
    name: 'VDI.list_changed_blocks',
    arity: 2,
    run: ({ sim }, a) => {
      const from = str(a, 0);
      const to = str(a, 1);
      sim.db.get('VDI', from);
      sim.db.get('VDI', to);
      if (isAttached(sim, to)) throw fault('VDI_IN_USE', to, 'list_changed_blocks');
      return sim.cbt.changedBlocks(from, to);
    },
  });
}
