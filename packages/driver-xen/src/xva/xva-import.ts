import { createReadStream, createWriteStream } from 'node:fs';
import { rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { DriverError, type Replica, type VmExport, type VmImportResult, type WriterOptions } from '@replikit/core';
import type { XenConnection } from '../xapi/xen-connection.js';
import { diskVbds, SNAPSHOT_LABEL_KEY } from '../xen-records.js';
import { PENDING_OF_KEY, PENDING_RUN_KEY, REPLICA_DISK_KEY } from '../xen-replica-keys.js';
import { markOvaXml } from './ova-mark.js';
import { XVA_IMPORT_KEY } from './xva-keys.js';
import { dropXvaLeftovers, importedVms, poolView } from './xva-leftovers.js';
import { makeSpoolDir } from './xva-spool.js';
import { srFreeBytes, stagingError, stagingSrRef } from './xva-staging.js';

/** What an XVA import needs besides the connection. */
export interface XvaImportInit {
  /** The target SR uuid (the job's `sr`); default the pool's default SR. */
  sr?: string | undefined;
  /** Drops every write pending on the replica (the target side's `dropPending`). */
  dropPending(replica: Replica, options?: WriterOptions): Promise<void>;
  /** The folder the export is spooled in. @default `os.tmpdir()` */
  spoolDir?: string | undefined;
}

/**
 * Imports an XVA export as the replica's pending version:
 * 1. what an earlier import for the replica left (a VM marked for it, pending disks) is dropped;
 * 2. the target SR must have the VM's size free (rule `xva-needs-staging`), else `E_RULE` and
 *    nothing more is touched;
 * 3. the export is spooled to a local file, its `ova.xml` marking the VM with
 *    `replikit:xva-import=<replica>/<run>` (`PUT /import` needs the length up front, which
 *    `GET /export` does not announce);
 * 4. `PUT /import` to the SR stages the whole VM there, beside the replica;
 * 5. its disks become the replica's pending disks (the same marks a writer's clone carries) and
 *    the imported VM is destroyed. The commit (`createRestorePoint`) swaps them in.
 *
 * A failure or a kill at any step leaves either nothing, or a marked VM / pending disks that the
 * next claim, import, revert or delete of the replica destroys. A kill while spooling leaves the
 * spool folder, which the next import on the machine removes ({@link makeSpoolDir}).
 */
export async function importXvaAsPending(
  connection: XenConnection,
  replica: Replica,
  exported: VmExport,
  init: XvaImportInit,
  options: WriterOptions = {},
): Promise<VmImportResult> {
  const signal = options.signal;
  const s = signal ? { signal } : {};
  if (exported.format !== 'xva') {
    throw new DriverError(`the xen driver imports whole VMs as XVA only, not '${exported.format}'`);
  }
  const runId = options.runId ?? '';
  await dropXvaLeftovers(connection, replica.id, options);
  await init.dropPending(replica, options);

  const srRef = await stagingSrRef(connection, init.sr, signal);
  const need = replica.disks.reduce((sum, d) => sum + d.size, 0);
  const free = await srFreeBytes(connection, srRef, signal);
  if (free < need) throw stagingError(exported.snapshot.vmId, need, free);

  const dir = await makeSpoolDir(init.spoolDir ?? tmpdir());
  let bytesRead = 0;
  try {
    const file = join(dir, 'export.xva');
    const counted = (async function* () {
      for await (const chunk of exported.body) {
        bytesRead += chunk.length;
        yield chunk;
      }
    })();
    const marked = markOvaXml(counted, { [XVA_IMPORT_KEY]: `${replica.id}/${runId}` }, [SNAPSHOT_LABEL_KEY]);
    await pipeline(Readable.from(marked), createWriteStream(file, { flags: 'wx', mode: 0o600 }), s).catch(
      (error: unknown) => {
        throw spoolError(error, dir, bytesRead);
      },
    );
    const length = (await stat(file)).size;
    await connection.put('/import', { sr_id: srRef }, createReadStream(file), length, signal);
    await adoptImport(connection, replica, runId, signal);
    return { bytesRead, bytesWritten: length };
  } catch (error) {
    // An import that failed on the pool removed its own disks; one that finished but could not be
    // adopted is removed here (or, if this process dies, by the next claim or import).
    if (!signal?.aborted) await dropXvaLeftovers(connection, replica.id).catch(() => undefined);
    throw error;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** A full spool folder as a one-line error that says where and what to do; other errors as they are. */
function spoolError(error: unknown, dir: string, bytes: number): unknown {
  const code = (error as NodeJS.ErrnoException).code;
  if (code !== 'ENOSPC' && code !== 'EDQUOT') return error;
  return new DriverError(
    `the XVA spool folder ${dir} ran out of space after ${bytes} bytes of the export: set the target's spoolDir to a folder with room for the VM's data`,
    { cause: error },
  );
}

/** Hands the disks of the imported VM to the replica as pending disks, then destroys the VM. */
async function adoptImport(
  connection: XenConnection,
  replica: Replica,
  runId: string,
  signal: AbortSignal | undefined,
): Promise<void> {
  const s = signal ? { signal } : {};
  const view = await poolView(connection, signal);
  const found = importedVms(view, replica.id, runId);
  if (found.length !== 1) {
    throw new DriverError(`the XVA import for replica '${replica.id}' made ${found.length} marked VMs, not one`);
  }
  const [vmRef, vm] = found[0]!;
  const disks = diskVbds(view, vm);
  const sizes = disks.map((d) => Number(d.vdi.virtual_size));
  if (sizes.length !== replica.disks.length || replica.disks.some((d, i) => d.size !== sizes[i])) {
    throw new DriverError(
      `the XVA import has disks of ${sizes.join(', ')} bytes, but replica '${replica.id}' has ${replica.disks.map((d) => d.size).join(', ')}; the source VM changed shape: seed a new job`,
    );
  }
  for (const [i, disk] of replica.disks.entries()) {
    const vdiRef = disks[i]!.vdiRef;
    const userdevice = String(disk.meta?.userdevice ?? i);
    for (const [key, value] of [
      [REPLICA_DISK_KEY, disk.id],
      [PENDING_OF_KEY, `${replica.id}/${userdevice}`],
      [PENDING_RUN_KEY, runId],
    ] as const) {
      await connection.call('VDI.remove_from_other_config', [vdiRef, key], s);
      await connection.call('VDI.add_to_other_config', [vdiRef, key, value], s);
    }
  }
  // The disks are the replica's now (pending): the VM that carried them goes; VM.destroy leaves VDIs.
  await connection.callAsync('VM.destroy', [vmRef], s);
}
