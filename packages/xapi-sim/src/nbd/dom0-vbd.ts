import { newVbd } from '../api/vbd.js';
import type { SimState } from '../sim-state.js';

/** Attaches a VDI read-only to dom0 for one NBD connection, as xapi-nbd does; returns the VBD. */
export function attachToDom0(sim: SimState, vdi: string): string {
  const vbd = newVbd(sim, {
    VM: sim.refs.dom0,
    VDI: vdi,
    mode: 'RO',
    type: 'Disk',
    other_config: { 'xapi-sim': 'nbd' },
  });
  sim.db.update('VBD', vbd, { currently_attached: true });
  return vbd;
}

/** Unplugs and destroys a connection's dom0 VBD (if it still exists). */
export function detachFromDom0(sim: SimState, vbd: string): void {
  if (!sim.db.has('VBD', vbd)) return;
  const rec = sim.db.get('VBD', vbd);
  sim.db.destroy('VBD', vbd);
  sim.db.removeFromSet('VM', rec.VM as string, 'VBDs', vbd);
  sim.db.removeFromSet('VDI', rec.VDI as string, 'VBDs', vbd);
}
