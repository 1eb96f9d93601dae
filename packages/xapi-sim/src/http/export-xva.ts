import type { IncomingMessage, ServerResponse } from 'node:http';
import { openRaw, type RawReader, xvaStream } from '@replikit/formats';
import { failTask, succeedTask } from '../api/task-runner.js';
import { checkPower } from '../api/vm-ops.js';
import { NULL_REF } from '../ids.js';
import type { SimState } from '../sim-state.js';
import { fault } from '../xapi-fault.js';
import { bodyWriter, openDataRequest, refuse, startCloseDelimited } from './data-request.js';

function resolveVm(sim: SimState, url: URL): string | undefined {
  const ref = url.searchParams.get('ref');
  if (ref !== null) return sim.db.has('VM', ref) ? ref : undefined;
  const uuid = url.searchParams.get('uuid');
  if (uuid === null) return undefined;
  try {
    return sim.db.byUuid('VM', uuid);
  } catch {
    return undefined;
  }
}

/**
 * `GET /export?ref=|uuid=`: the VM as an uncompressed XVA (`ova.xml`, 1 MiB chunks with
 * `.xxhash`), written by `@replikit/formats`. The VM must be halted (or be a snapshot).
 */
export async function exportXva(sim: SimState, req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
  const data = openDataRequest(sim, req, res, url, 'VM.export');
  if (data === undefined) return;
  const vm = resolveVm(sim, url);
  if (vm === undefined) {
    failTask(
      sim,
      data.task,
      fault('HANDLE_INVALID', 'VM', url.searchParams.get('ref') ?? url.searchParams.get('uuid') ?? ''),
    );
    return refuse(res, 404, 'no such VM');
  }
  try {
    if (!sim.db.field<boolean>('VM', vm, 'is_a_snapshot')) checkPower(sim, vm, 'Halted', 'Suspended');
  } catch (error) {
    failTask(sim, data.task, error);
    return refuse(res, 500, 'VM must be halted');
  }
  const rec = sim.db.get('VM', vm);
  const disks = (rec.VBDs as string[])
    .map((v) => sim.db.get('VBD', v))
    .filter((b) => b.type === 'Disk' && b.VDI !== NULL_REF)
    .sort((a, b) => Number(a.userdevice) - Number(b.userdevice));
  const readers: RawReader[] = [];
  startCloseDelimited(res, 200, {
    'task-id': data.task,
    'content-type': 'application/octet-stream',
    'content-disposition': 'attachment; filename="export.xva"',
  });
  try {
    for (const d of disks) readers.push(await openRaw(sim.vdiPath(d.VDI as string)));
    const stream = xvaStream({
      vm: {
        name: rec.name_label as string,
        description: rec.name_description as string,
        uuid: rec.uuid as string,
        otherConfig: rec.other_config as Record<string, string>,
      },
      disks: disks.map((d, i) => ({
        reader: readers[i]!,
        name: sim.db.field<string>('VDI', d.VDI as string, 'name_label'),
        uuid: sim.db.field<string>('VDI', d.VDI as string, 'uuid'),
        bootable: d.bootable as boolean,
      })),
    });
    const write = bodyWriter(sim, res);
    for await (const chunk of stream) await write(chunk);
    res.end();
    succeedTask(sim, data.task, undefined);
  } catch (error) {
    failTask(sim, data.task, error);
    res.destroy();
  } finally {
    for (const r of readers) await r.close();
  }
}
