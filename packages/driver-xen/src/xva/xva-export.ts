import { NotFoundError, type OperationOptions, type Snapshot, type VmExport } from '@replikit/core';
import type { XenConnection } from '../xapi/xen-connection.js';

/**
 * Exports a snapshot VM as an XVA (`GET /export?ref=`): the whole VM, every disk in full. The
 * body is the host's response, read once by the importer; `close` drops what was not read.
 */
export async function exportSnapshotXva(
  connection: XenConnection,
  snapshot: Snapshot,
  options?: OperationOptions,
): Promise<VmExport> {
  const signal = options?.signal;
  const s = signal ? { signal } : {};
  let ref: string;
  try {
    ref = await connection.call<string>('VM.get_by_uuid', [snapshot.id], s);
  } catch (error) {
    throw new NotFoundError(`snapshot '${snapshot.id}' is gone from the source pool; run the job again`, {
      cause: error,
    });
  }
  const response = await connection.get('/export', { ref }, signal);
  return {
    format: 'xva',
    snapshot,
    body: response,
    async close() {
      if (!response.complete) response.destroy();
    },
  };
}
