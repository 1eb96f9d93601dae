import type { OperationOptions } from '@replikit/core';
import type { XenConnection } from '../xapi/xen-connection.js';
import { diskVbds, otherConfig, type PoolView, type XRecord } from '../xen-records.js';
import { XVA_IMPORT_KEY } from './xva-keys.js';

/** The pool's VMs, VBDs and VDIs, in three calls. */
export async function poolView(connection: XenConnection, signal?: AbortSignal): Promise<PoolView> {
  const s = signal ? { signal } : {};
  const [vms, vbds, vdis] = await Promise.all(
    ['VM', 'VBD', 'VDI'].map((cls) => connection.call<Record<string, XRecord>>(`${cls}.get_all_records`, [], s)),
  );
  return { vms: vms!, vbds: vbds!, vdis: vdis! };
}

/** The VMs imported for replica `replicaId` (by the run `runId` only, when given), by their mark. */
export function importedVms(view: PoolView, replicaId: string, runId?: string): Array<[string, XRecord]> {
  return Object.entries(view.vms).filter(([, vm]) => {
    const mark = otherConfig(vm)[XVA_IMPORT_KEY];
    if (mark === undefined || vm.is_a_snapshot === true) return false;
    return runId === undefined ? mark.startsWith(`${replicaId}/`) : mark === `${replicaId}/${runId}`;
  });
}

/**
 * Destroys what an XVA import for the replica left behind (a run killed or failed between the
 * import and handing its disks to the replica): each VM marked for the replica, with its disks.
 * Returns how many VMs it destroyed. Safe to call at any time: a finished import leaves no marked VM.
 */
export async function dropXvaLeftovers(
  connection: XenConnection,
  replicaId: string,
  options?: OperationOptions,
): Promise<number> {
  const signal = options?.signal;
  const s = signal ? { signal } : {};
  const view = await poolView(connection, signal);
  const leftovers = importedVms(view, replicaId);
  for (const [ref, vm] of leftovers) {
    const disks = diskVbds(view, vm);
    await connection.callAsync('VM.destroy', [ref], s);
    for (const { vdiRef } of disks) await connection.callAsync('VDI.destroy', [vdiRef], s);
  }
  return leftovers.length;
}
