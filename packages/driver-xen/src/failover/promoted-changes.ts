import { type Extent, FailedOverError, type OperationOptions, type Replica } from '@replikit/core';
import { changedExtents } from '../cbt-bitmap.js';
import { xapiCodeOf } from '../xapi/xapi-error.js';
import { diskVbds, type XRecord } from '../xen-records.js';
import { sig, str, type XenFailoverContext } from './failover-context.js';
import { type LiveVdi, liveVdiOf } from './live-vdi.js';
import { destroyProbe, takeProbe } from './vdi-probe.js';
import { assertReplicaConfig, configOf, storedMark, vmRefOf } from './vm-config.js';

const codeOf = (error: unknown): string | undefined => xapiCodeOf((error as { cause?: unknown }).cause ?? error)?.code;

/** `VDI.list_changed_blocks(from, to)` as extents; `undefined` when CBT cannot tell (a reset or cut chain). */
async function listChanged(
  ctx: XenFailoverContext,
  fromRef: string,
  toRef: string,
  size: number,
  options?: OperationOptions,
): Promise<Extent[] | undefined | 'in-use'> {
  let bitmap: string;
  try {
    bitmap = await ctx.connection.call<string>('VDI.list_changed_blocks', [fromRef, toRef], {
      ...sig(options),
      retryInUse: false,
    });
  } catch (error) {
    const code = codeOf(error);
    if (code === undefined || options?.signal?.aborted) throw error;
    return code === 'VDI_IN_USE' ? 'in-use' : undefined;
  }
  return changedExtents(bitmap, size);
}

/**
 * The extents CBT reports written on `disk` (its live VDI) since the snapshot VDI `fromRef`, or
 * `undefined` when CBT is off on either or cannot tell. XAPI answers `VDI_IN_USE` while the live
 * VDI is attached to a running VM: the question then goes to a probe snapshot of it, destroyed
 * right after (see `vdi-probe.ts`; the chain stays whole). Takes nothing else and keeps nothing.
 */
export async function changesSinceSnapshot(
  ctx: XenFailoverContext,
  disk: LiveVdi,
  fromRef: string,
  from: XRecord,
  options?: OperationOptions,
  read: { probe?: boolean } = {},
): Promise<Extent[] | undefined> {
  if (from.cbt_enabled !== true || disk.vdi.cbt_enabled !== true) return undefined;
  const direct = await listChanged(ctx, fromRef, disk.vdiRef, disk.size, options);
  if (direct !== 'in-use') return direct;
  // A running VM's disk: only a probe snapshot can tell, and a caller that promised to take no
  // snapshot (ChangeTracker.pending, for `replikit plan`) gets "cannot tell" instead.
  if (read.probe === false) return undefined;
  const probe = await takeProbe(ctx, disk, options);
  try {
    const probed = await listChanged(ctx, fromRef, probe, disk.size, options);
    return probed === 'in-use' ? undefined : probed;
  } finally {
    await destroyProbe(ctx, probe, options);
  }
}

/**
 * See `FailoverHooks.promotedChanges`: CBT between the snapshot VDI of the restore point the
 * replica was promoted from (kept by the promotion: undo reverts to it) and the disk the replica
 * runs on. `E_FAILED_OVER` when the replica is not failed over; `undefined` when CBT cannot tell
 * (off, reset, a broken chain, or the point's snapshot gone).
 */
export async function promotedChanges(
  ctx: XenFailoverContext,
  replica: Replica,
  diskId: string,
  options?: OperationOptions,
): Promise<Extent[] | undefined> {
  const config = await configOf(ctx, await vmRefOf(ctx, replica.id, options), options);
  assertReplicaConfig(config, replica.id);
  const mark = storedMark(config, replica.id);
  if (!mark || mark.state === 'promoting') {
    throw new FailedOverError(`replica '${replica.id}' is not failed over; it has no changes since a promotion`, {
      details: { state: mark?.state ?? 'replica' },
    });
  }
  const disk = await liveVdiOf(ctx, replica.id, diskId, options);
  const snapshot = Object.values(disk.view.vms).find(
    (vm) => vm.is_a_snapshot === true && str(vm.uuid) === mark.pointId,
  );
  if (!snapshot) return undefined;
  const saved = diskVbds(disk.view, snapshot).find((d) => str(d.vbd.userdevice) === disk.userdevice);
  // The point's disk must be a snapshot of the VDI the replica runs on; anything else has no chain.
  if (!saved || str(saved.vdi.snapshot_of) !== disk.vdiRef) return undefined;
  return changesSinceSnapshot(ctx, disk, saved.vdiRef, saved.vdi, options);
}
