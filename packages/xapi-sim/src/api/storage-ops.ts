import { NULL_REF, newUuid, xapiDate } from '../ids.js';
import type { XRecord } from '../model/wire.js';
import type { SimState } from '../sim-state.js';
import { copyVdiFile, createVdiFile, removeVdiFile } from '../storage/vdi-file.js';
import { fault } from '../xapi-fault.js';

/** Fails with `SR_FULL [requested, maximum]` if `size` more bytes do not fit on the SR. */
export function checkSrSpace(sim: SimState, sr: string, size: number): void {
  const rec = sim.db.get('SR', sr);
  const max = rec.physical_size as number;
  const used = rec.virtual_allocation as number;
  if (used + size > max) throw fault('SR_FULL', used + size, max);
}

function account(sim: SimState, sr: string, delta: number): void {
  const used = sim.db.field<number>('SR', sr, 'virtual_allocation');
  sim.db.update('SR', sr, { virtual_allocation: used + delta, physical_utilisation: used + delta });
}

/** Creates a VDI record and its sparse file on an SR; returns the ref. */
export async function newVdi(sim: SimState, sr: string, fields: XRecord): Promise<string> {
  sim.db.get('SR', sr);
  const size = fields.virtual_size;
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0)
    throw fault('FIELD_TYPE_ERROR', 'virtual_size');
  checkSrSpace(sim, sr, size);
  const uuid = newUuid();
  const ref = sim.db.create('VDI', { ...fields, uuid, SR: sr, location: uuid, VBDs: [], snapshots: [] });
  try {
    await createVdiFile(sim.vdiPath(ref), size);
  } catch (error) {
    sim.db.destroy('VDI', ref);
    throw fault('SR_BACKEND_FAILURE', 'EIO', '', String((error as Error).message));
  }
  sim.db.addToSet('SR', sr, 'VDIs', ref);
  account(sim, sr, size);
  return ref;
}

/** A new VDI holding a copy of `from`'s data (`snapshot`: with snapshot semantics). */
export async function duplicateVdi(
  sim: SimState,
  from: string,
  sr: string,
  kind: 'snapshot' | 'clone' | 'copy',
): Promise<string> {
  const src = sim.db.get('VDI', from);
  if (src.type === 'cbt_metadata') throw fault('VDI_INCOMPATIBLE_TYPE', from, 'cbt_metadata');
  const size = src.virtual_size as number;
  checkSrSpace(sim, sr, size);
  const uuid = newUuid();
  const isSnap = kind === 'snapshot';
  const ref = sim.db.create('VDI', {
    ...src,
    uuid,
    SR: sr,
    location: uuid,
    VBDs: [],
    snapshots: [],
    crash_dumps: [],
    allowed_operations: [],
    current_operations: {},
    is_a_snapshot: isSnap,
    snapshot_of: isSnap ? from : NULL_REF,
    snapshot_time: isSnap ? xapiDate() : '19700101T00:00:00Z',
    cbt_enabled: isSnap ? (src.cbt_enabled as boolean) : false,
    sm_config: kind === 'copy' ? {} : src.sm_config!,
  });
  try {
    await copyVdiFile(sim.vdiPath(from), sim.vdiPath(ref));
  } catch (error) {
    sim.db.destroy('VDI', ref);
    throw fault('VDI_IO_ERROR', String((error as Error).message));
  }
  sim.db.addToSet('SR', sr, 'VDIs', ref);
  if (isSnap) {
    sim.db.addToSet('VDI', from, 'snapshots', ref);
    if (src.cbt_enabled === true) sim.cbt.snapshot(from, ref);
  }
  account(sim, sr, size);
  return ref;
}

/** Removes a VDI: refuses while attached, destroys its unplugged VBDs, keeps back-references. */
export async function deleteVdi(sim: SimState, vdi: string, op = 'destroy'): Promise<void> {
  const rec = sim.db.get('VDI', vdi);
  const vbds = rec.VBDs as string[];
  if (vbds.some((v) => sim.db.field<boolean>('VBD', v, 'currently_attached')) || sim.faults.isLingering(vdi)) {
    throw fault('VDI_IN_USE', vdi, op);
  }
  for (const vbd of vbds) {
    const vm = sim.db.field<string>('VBD', vbd, 'VM');
    sim.db.destroy('VBD', vbd);
    sim.db.removeFromSet('VM', vm, 'VBDs', vbd);
  }
  const path = sim.vdiPath(vdi);
  const sr = rec.SR as string;
  sim.cbt.forget(vdi);
  sim.db.destroy('VDI', vdi);
  sim.db.removeFromSet('SR', sr, 'VDIs', vdi);
  const of = rec.snapshot_of as string;
  if (of !== NULL_REF) sim.db.removeFromSet('VDI', of, 'snapshots', vdi);
  for (const snap of rec.snapshots as string[]) {
    if (sim.db.has('VDI', snap)) sim.db.update('VDI', snap, { snapshot_of: NULL_REF });
  }
  await removeVdiFile(path);
  if (rec.type !== 'cbt_metadata') account(sim, sr, -(rec.virtual_size as number));
}
