import { NULL_REF } from './ids.js';
import type { SimState } from './sim-state.js';
import { writeVdiFile } from './storage/vdi-file.js';
import { fault } from './xapi-fault.js';

/**
 * What a guest does to its disks, for tests and drivers: write through an attached read-write VBD,
 * the way tapdisk would, with every write recorded in the VDI's CBT log.
 */
export async function guestWrite(
  sim: SimState,
  vm: string,
  userdevice: string,
  offset: number,
  data: Uint8Array,
): Promise<void> {
  const power = sim.db.field<string>('VM', vm, 'power_state');
  if (power !== 'Running') throw fault('VM_BAD_POWER_STATE', vm, 'running', power.toLowerCase());
  const vbd = sim.db
    .field<string[]>('VM', vm, 'VBDs')
    .find((v) => sim.db.field<string>('VBD', v, 'userdevice') === userdevice);
  if (vbd === undefined) throw fault('VM_HAS_NO_SUITABLE_VBD', vm, userdevice);
  const rec = sim.db.get('VBD', vbd);
  if (rec.currently_attached !== true || rec.VDI === NULL_REF) throw fault('DEVICE_ALREADY_DETACHED', vbd);
  if (rec.mode !== 'RW') throw fault('VBD_IS_READ_ONLY', vbd);
  const vdi = rec.VDI as string;
  const size = sim.db.field<number>('VDI', vdi, 'virtual_size');
  if (!Number.isSafeInteger(offset) || offset < 0 || offset + data.length > size) {
    throw fault('VDI_IO_ERROR', `write of ${data.length} bytes at ${offset} is outside the ${size}-byte disk`);
  }
  await sim.serial(async () => {
    await writeVdiFile(sim.vdiPath(vdi), offset, data);
    sim.cbt.markWrite(vdi, offset, data.length);
  });
}
