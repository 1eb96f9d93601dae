import { constants } from 'node:fs';
import { open, rm } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { dirname, join } from 'node:path';
import { TokenBucket } from '@replikit/core/internal';
import { failTask, succeedTask } from '../api/task-runner.js';
import { newUuid } from '../ids.js';
import type { SimState } from '../sim-state.js';
import { fault } from '../xapi-fault.js';
import { openDataRequest, refuse, resolveVdi, startCloseDelimited } from './data-request.js';
import { applyVhd } from './vhd-apply.js';

/** The Content-Length the xen-api client announces when it does not know the length (1 PiB). */
const UNKNOWN_LENGTH = 1125899906842624;

/** Reads the body into `sink` until its end, or until the client closes (the 1 PiB case). */
async function drain(req: IncomingMessage, sink: (chunk: Buffer) => Promise<void>, rate?: number): Promise<number> {
  let total = 0;
  const bucket = rate === undefined ? undefined : new TokenBucket(rate);
  try {
    for await (const chunk of req as AsyncIterable<Buffer>) {
      await bucket?.take(chunk.length);
      await sink(chunk);
      total += chunk.length;
    }
  } catch (error) {
    if ((error as { code?: string }).code !== 'ECONNRESET' && (error as Error).message !== 'aborted') throw error;
  }
  return total;
}

/**
 * `PUT /import_raw_vdi?vdi=&format=raw|vhd`: `200` and the `task-id` go out before the body is
 * read, as XAPI does; raw writes the body from offset 0, vhd writes only the VHD's allocated
 * sectors. `Transfer-Encoding` is refused with 404; the probe PUT (no task, empty) is a no-op.
 * Guest-visible writes are tracked by CBT like dom0's writes through tapdisk.
 */
export async function importRawVdi(sim: SimState, req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
  if (req.headers['transfer-encoding'] !== undefined) return refuse(res, 404, 'Transfer-Encoding is not supported');
  const format = url.searchParams.get('format') ?? 'raw';
  if (format !== 'raw' && format !== 'vhd') return refuse(res, 404, `format ${format} is not imported`);
  const declared = Number(req.headers['content-length'] ?? Number.NaN);
  if (declared === 0 && !url.searchParams.has('task_id')) {
    startCloseDelimited(res, 200, { 'content-type': 'application/octet-stream' });
    req.resume();
    res.end();
    return;
  }
  const data = openDataRequest(sim, req, res, url, 'VDI.import_raw_vdi');
  if (data === undefined) return;
  const vdi = resolveVdi(sim, url.searchParams.get('vdi'));
  if (vdi === undefined) {
    failTask(sim, data.task, fault('HANDLE_INVALID', 'VDI', url.searchParams.get('vdi') ?? ''));
    return refuse(res, 404, 'no such VDI');
  }
  startCloseDelimited(res, 200, { 'task-id': data.task, 'content-type': 'application/octet-stream' });
  const size = sim.db.field<number>('VDI', vdi, 'virtual_size');
  const path = sim.vdiPath(vdi);
  const vdiFh = await open(path, constants.O_RDWR | constants.O_NOFOLLOW);
  const writeAt = async (offset: number, bytes: Uint8Array) => {
    if (offset + bytes.length > size) throw fault('VDI_IO_ERROR', `write past the end of the ${size}-byte VDI`);
    await vdiFh.write(bytes, 0, bytes.length, offset);
    sim.cbt.markWrite(vdi, offset, bytes.length);
  };
  const temp = join(dirname(path), `.import-${newUuid()}.vhd`);
  try {
    if (format === 'raw') {
      let offset = 0;
      const total = await drain(
        req,
        async (chunk) => {
          await writeAt(offset, chunk);
          offset += chunk.length;
        },
        sim.faults.linkBytesPerSecond,
      );
      if (Number.isFinite(declared) && declared !== UNKNOWN_LENGTH && total < declared) {
        throw fault('VDI_IO_ERROR', `the upload ended after ${total} of ${declared} bytes`);
      }
    } else {
      const tmp = await open(
        temp,
        constants.O_CREAT | constants.O_EXCL | constants.O_RDWR | constants.O_NOFOLLOW,
        0o600,
      );
      try {
        let at = 0;
        const total = await drain(
          req,
          async (chunk) => {
            await tmp.write(chunk, 0, chunk.length, at);
            at += chunk.length;
          },
          sim.faults.linkBytesPerSecond,
        );
        await applyVhd(tmp, total, writeAt, size);
      } finally {
        await tmp.close();
      }
    }
    succeedTask(sim, data.task, vdi);
  } catch (error) {
    failTask(sim, data.task, error);
  } finally {
    await vdiFh.close();
    await rm(temp, { force: true });
    res.end();
  }
}
