import type { IncomingMessage, ServerResponse } from 'node:http';
import { createRaw, readXva } from '@replikit/formats';
import { deleteVdi, newVdi } from '../api/storage-ops.js';
import { failTask, succeedTask } from '../api/task-runner.js';
import { newVbd } from '../api/vbd.js';
import { RECORD_DEFAULTS } from '../model/defaults.js';
import type { XRecord } from '../model/wire.js';
import type { SimState } from '../sim-state.js';
import { fault } from '../xapi-fault.js';
import { openDataRequest, refuse, startCloseDelimited } from './data-request.js';

/** VM fields an import takes from `ova.xml` (references and runtime state are the host's). */
const IMPORTED_FIELDS = [
  'name_label',
  'name_description',
  'other_config',
  'platform',
  'HVM_boot_policy',
  'HVM_boot_params',
  'VCPUs_max',
  'VCPUs_at_startup',
  'VCPUs_params',
  'memory_static_max',
  'memory_static_min',
  'memory_dynamic_max',
  'memory_dynamic_min',
  'domain_type',
  'actions_after_shutdown',
  'actions_after_reboot',
  'actions_after_crash',
  'tags',
  'blocked_operations',
  'bios_strings',
  'PV_args',
  'PV_bootloader',
];

function resolveSr(sim: SimState, url: URL): string {
  const id = url.searchParams.get('sr_id');
  if (id !== null) {
    if (!sim.db.has('SR', id)) throw fault('HANDLE_INVALID', 'SR', id);
    return id;
  }
  const uuid = url.searchParams.get('sr_uuid');
  if (uuid !== null) return sim.db.byUuid('SR', uuid);
  return sim.db.field<string>('pool', sim.refs.pool, 'default_SR');
}

/**
 * `PUT /import[?sr_id=]`: an XVA (plain, gzip or zstd) becomes a halted VM with its disks on the
 * SR. `200` and the task go out first; `Transfer-Encoding` is refused with 403; the task's result
 * is the set of imported VM refs.
 */
export async function importXva(sim: SimState, req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
  if (req.headers['transfer-encoding'] !== undefined) return refuse(res, 403, 'Transfer-Encoding is not supported');
  if (req.headers['content-length'] === '0' && !url.searchParams.has('task_id')) {
    startCloseDelimited(res, 200, { 'content-type': 'application/octet-stream' });
    req.resume();
    res.end();
    return;
  }
  const data = openDataRequest(sim, req, res, url, 'VM.import');
  if (data === undefined) return;
  startCloseDelimited(res, 200, { 'task-id': data.task, 'content-type': 'application/octet-stream' });
  const created: string[] = [];
  try {
    const sr = resolveSr(sim, url);
    const vdis = new Map<string, string>();
    const contents = await readXva(req as AsyncIterable<Uint8Array>, {
      name: 'upload',
      openWriter: async (vdi) => {
        const ref = await newVdi(sim, sr, { name_label: vdi.name, virtual_size: vdi.size, type: 'user' });
        created.push(ref);
        vdis.set(vdi.ref, ref);
        return createRaw(sim.vdiPath(ref), { size: vdi.size, sync: false });
      },
    });
    const known = RECORD_DEFAULTS.VM();
    const fields: XRecord = {};
    for (const k of IMPORTED_FIELDS) {
      const v = contents.vm[k];
      if (v !== undefined && typeof v === typeof known[k] && Array.isArray(v) === Array.isArray(known[k]))
        fields[k] = v as never;
    }
    const vm = sim.db.create('VM', { ...fields, power_state: 'Halted' });
    contents.vdis.forEach((v, i) => {
      const ref = vdis.get(v.ref);
      if (ref !== undefined)
        newVbd(sim, { VM: vm, VDI: ref, userdevice: String(i), bootable: i === 0, mode: 'RW', type: 'Disk' });
    });
    succeedTask(sim, data.task, [vm]);
  } catch (error) {
    for (const ref of created) await deleteVdi(sim, ref).catch(() => undefined);
    failTask(sim, data.task, error);
  } finally {
    res.end();
  }
}
