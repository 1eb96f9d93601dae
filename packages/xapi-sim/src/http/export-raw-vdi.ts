import type { IncomingMessage, ServerResponse } from 'node:http';
import { vhdStream } from '@replikit/formats';
import { failTask, succeedTask } from '../api/task-runner.js';
import type { SimState } from '../sim-state.js';
import { fault } from '../xapi-fault.js';
import { bodyWriter, openDataRequest, refuse, resolveVdi, startCloseDelimited } from './data-request.js';
import { exportBlocks, openVdiRead, readBlock, uuidBytes, VHD_BLOCK } from './vdi-blocks.js';

const CONTENT_TYPES: Record<string, string> = { raw: 'application/octet-stream', vhd: 'application/vhd' };

/**
 * `GET /export_raw_vdi?vdi=&format=raw|vhd[&base=]`: the VDI's bytes, or a dynamic VHD of its
 * non-zero 2 MiB blocks, or with `base=` a differencing VHD of the blocks that differ from the
 * base (its parent named `<base-uuid>.vhd`, unique ids taken from the VDI uuids).
 */
export async function exportRawVdi(sim: SimState, req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
  const format = url.searchParams.get('format') ?? 'raw';
  if (CONTENT_TYPES[format] === undefined) return refuse(res, 404, `format ${format} is not exported`);
  const data = openDataRequest(sim, req, res, url, 'VDI.export_raw_vdi');
  if (data === undefined) return;
  const vdi = resolveVdi(sim, url.searchParams.get('vdi'));
  const baseParam = url.searchParams.get('base');
  const base = resolveVdi(sim, baseParam);
  if (vdi === undefined || (baseParam !== null && base === undefined)) {
    failTask(
      sim,
      data.task,
      fault('HANDLE_INVALID', 'VDI', url.searchParams.get(vdi === undefined ? 'vdi' : 'base') ?? ''),
    );
    return refuse(res, 404, 'no such VDI');
  }
  const rec = sim.db.get('VDI', vdi);
  if (rec.type === 'cbt_metadata') {
    failTask(sim, data.task, fault('VDI_INCOMPATIBLE_TYPE', vdi, 'cbt_metadata'));
    return refuse(res, 500, 'VDI has no data');
  }
  const size = rec.virtual_size as number;
  startCloseDelimited(res, 200, {
    'task-id': data.task,
    'content-type': CONTENT_TYPES[format]!,
    'content-disposition': `attachment; filename="${rec.uuid as string}.${format}"`,
  });
  const write = bodyWriter(sim, res);
  const fh = await openVdiRead(sim.vdiPath(vdi));
  const baseFh = base === undefined ? undefined : await openVdiRead(sim.vdiPath(base));
  try {
    if (format === 'raw') {
      for (let i = 0; i * VHD_BLOCK < size; i++) await write(await readBlock(fh, i, size));
    } else {
      const blocks = await exportBlocks(fh, size, baseFh);
      const baseUuid = base === undefined ? undefined : sim.db.field<string>('VDI', base, 'uuid');
      const stream = vhdStream({
        size,
        blockSize: VHD_BLOCK,
        blocks,
        readBlock: (i) => readBlock(fh, i, size),
        uniqueId: uuidBytes(rec.uuid as string),
        ...(baseUuid === undefined
          ? {}
          : {
              parent: { path: `${baseUuid}.vhd`, uniqueId: uuidBytes(baseUuid), timestamp: 0 },
              path: `${rec.uuid}.vhd`,
            }),
      });
      for await (const chunk of stream) await write(chunk);
    }
    res.end();
    succeedTask(sim, data.task, undefined);
  } catch (error) {
    failTask(sim, data.task, error);
    res.destroy();
  } finally {
    await fh.close();
    await baseFh?.close();
  }
}
