import {
  type CloneInfo,
  type CloneOptions,
  ConflictError,
  NotFoundError,
  type OperationOptions,
  type Replica,
  type RestorePoint,
} from '@replikit/core';
import { diskVbds, otherConfig, type PoolView, type XRecord } from '../xen-records.js';
import { setCloneNetworks } from './clone-networks.js';
import { type CloneMarks, cloneMarksOf, cloneView, isUnmarkedCloneOf, toCloneInfo } from './clone-records.js';
import { sig, str, type XenFailoverContext } from './failover-context.js';
import { CLONE_KEY, CLONE_VDI_KEY } from './failover-keys.js';
import { assertReplicaConfig, configOf, updateConfig, vmRefOf } from './vm-config.js';

/** The VM named `name` this call may finish (a clone of the same point), or a refusal. */
function findByName(
  vms: Record<string, XRecord>,
  name: string,
  replicaVm: XRecord,
  replicaId: string,
  pointId: string,
): [string, XRecord] | undefined {
  for (const [ref, vm] of Object.entries(vms)) {
    if (str(vm.name_label) !== name || vm.is_a_snapshot === true || vm.is_control_domain === true) continue;
    const marks = cloneMarksOf(vm);
    if (marks ? marks.replicaId === replicaId && marks.pointId === pointId : isUnmarkedCloneOf(vm, replicaVm)) {
      return [ref, vm];
    }
    throw new ConflictError(
      `a VM named '${name}' exists (${str(vm.uuid)}) and is not a clone of restore point ${pointId} of replica '${replicaId}'; pick another name`,
      { details: { vmId: str(vm.uuid) } },
    );
  }
  return undefined;
}

/** Tags each disk VDI of the clone with {@link CLONE_VDI_KEY}, so that `destroyClone` knows its own. */
async function tagCloneDisks(
  ctx: XenFailoverContext,
  cloneRef: string,
  cloneUuid: string,
  options?: OperationOptions,
): Promise<void> {
  const s = sig(options);
  const [vms, vbds, vdis] = await Promise.all(
    ['VM', 'VBD', 'VDI'].map((cls) => ctx.connection.call<Record<string, XRecord>>(`${cls}.get_all_records`, [], s)),
  );
  const view: PoolView = { vms: vms!, vbds: vbds!, vdis: vdis! };
  for (const { vdiRef, vdi } of diskVbds(view, view.vms[cloneRef]!)) {
    const tag = otherConfig(vdi)[CLONE_VDI_KEY];
    if (tag === cloneUuid) continue;
    if (tag !== undefined) await ctx.connection.call('VDI.remove_from_other_config', [vdiRef, CLONE_VDI_KEY], s);
    await ctx.connection.call('VDI.add_to_other_config', [vdiRef, CLONE_VDI_KEY, cloneUuid], s);
  }
}

/**
 * See `FailoverHooks.cloneRestorePoint`: `VM.clone` of the restore point's snapshot (a halted VM
 * whose disks are copy-on-write clones of the point's, so they hold the point byte for byte),
 * then, each step finished by the next call after a crash: `other_config` rewritten at once (the
 * replica's marks copied from the snapshot dropped, the clone marks set), `is_a_template` off,
 * its VDIs tagged, its VIFs removed (isolated) or moved to the mapped networks, the marks `ready`.
 * The replica and its restore points are never changed. Any restore point can be cloned.
 */
export async function cloneRestorePoint(
  ctx: XenFailoverContext,
  replica: Replica,
  point: RestorePoint,
  options: CloneOptions,
): Promise<CloneInfo> {
  const s = sig(options);
  const replicaRef = await vmRefOf(ctx, replica.id, options);
  assertReplicaConfig(await configOf(ctx, replicaRef, options), replica.id);
  let view = await cloneView(ctx, options);
  const replicaVm = view.vms[replicaRef]!;
  const snapshot = Object.entries(view.vms).find(
    ([, vm]) => vm.is_a_snapshot === true && str(vm.uuid) === point.id && str(vm.snapshot_of) === replicaRef,
  );
  let found = findByName(view.vms, options.name, replicaVm, replica.id, point.id);
  const marks = found ? cloneMarksOf(found[1]) : undefined;
  if (found && marks?.state === 'ready') return toCloneInfo(view, found[1], marks);
  if (!found) {
    const listed = (await ctx.target.listPoints(replica, options)).some((p) => p.id === point.id);
    if (!listed || !snapshot) {
      throw new NotFoundError(`replica '${replica.id}' has no restore point ${point.id}`, {
        details: { pointId: point.id },
      });
    }
    const ref = await ctx.connection.callAsync<string>('VM.clone', [snapshot[0], options.name], s);
    await ctx.faultHook?.('clone:cloned');
    view = await cloneView(ctx, options);
    found = [ref, view.vms[ref]!];
  }
  const [cloneRef, cloneVm] = found;
  const cloneUuid = str(cloneVm.uuid);
  const building: CloneMarks = {
    replicaId: replica.id,
    pointId: point.id,
    operationId: marks?.operationId ?? options.operationId,
    createdAt: marks?.createdAt ?? new Date().toISOString(),
    state: 'building',
  };
  // One write: the marks copied from the snapshot go, the clone's come.
  const plain = (c: Record<string, string>) =>
    Object.fromEntries(Object.entries(c).filter(([k]) => !k.startsWith('replikit:')));
  if (!marks)
    await updateConfig(ctx, cloneRef, (c) => ({ ...plain(c), [CLONE_KEY]: JSON.stringify(building) }), options);
  if (cloneVm.is_a_template === true) await ctx.connection.call('VM.set_is_a_template', [cloneRef, false], s);
  await tagCloneDisks(ctx, cloneRef, cloneUuid, options);
  await ctx.faultHook?.('clone:marked');
  view = await cloneView(ctx, options);
  await setCloneNetworks(ctx, view, cloneRef, options.network ?? { mode: 'isolated' }, snapshot?.[1], options);
  await ctx.faultHook?.('clone:networks');
  const ready: CloneMarks = { ...building, state: 'ready' };
  await updateConfig(ctx, cloneRef, (c) => ({ ...c, [CLONE_KEY]: JSON.stringify(ready) }), options);
  await ctx.faultHook?.('clone:created');
  view = await cloneView(ctx, options);
  return toCloneInfo(view, view.vms[cloneRef]!, ready);
}
