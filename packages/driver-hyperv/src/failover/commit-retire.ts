import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { FailedOverError, NotFoundError, type Replica } from '@replikit/core';
import { SET_VM_NOTES } from '../scripts/failover-scripts.js';
import { REMOVE_CHECKPOINT } from '../scripts/hyperv-scripts.js';
import { identityOf } from '../target/replica-files.js';
import type { HyperVFailoverContext } from './failover-context.js';
import { readFailover, retiredOf, writeFailover } from './failover-files.js';

/** See `FailoverHooks.commitFailover`: the state becomes `committed` (undo kept only the point's checkpoint). */
export async function commitFailover(ctx: HyperVFailoverContext, replica: Replica): Promise<void> {
  const { dir } = (await ctx.target.vm(replica)).identity;
  const f = await readFailover(dir);
  if (!f || f.state === 'promoting') {
    throw new FailedOverError(
      `replica '${replica.id}' is not failed over${f ? ' yet (its promotion did not finish)' : ''}; there is nothing to commit`,
      { details: { state: f?.state ?? 'replica' } },
    );
  }
  if (f.state !== 'committed') await writeFailover(dir, { state: 'committed', pointId: f.pointId });
}

/** The files only a replica's folder holds (its disks and the VM's own files stay). */
const REPLICA_ONLY = [
  'replikit-mark',
  'replikit-points.json',
  'replikit-owner.json',
  'replikit-boot',
  'replikit-failover.json',
];

/**
 * See `FailoverHooks.retireReplica`. The restore points' checkpoints are removed (Hyper-V merges
 * them into the running disks), then the VM's notes lose the replica identity and get a retired
 * record (replica name, source, point), so `ensureReplica` of that name refuses the VM
 * (`E_CONFLICT`), then the replica's own files go. Retiring again changes nothing.
 */
export async function retireReplica(ctx: HyperVFailoverContext, replica: Replica): Promise<void> {
  const wanted = replica.id.toLowerCase();
  const row = (await ctx.target.noteRows()).find((r) => r.Id.toLowerCase() === wanted);
  if (!row) throw new NotFoundError(`replica '${replica.id}' no longer exists on this Hyper-V host`);
  const identity = identityOf(row.Notes);
  const retired = retiredOf(row.Notes);
  if (!identity && retired) {
    if (typeof retired.dir === 'string') await dropReplicaFiles(retired.dir);
    return; // retired already
  }
  const vm = await ctx.target.vm(replica);
  const f = await readFailover(vm.identity.dir);
  if (f?.state !== 'committed') {
    throw new FailedOverError(
      `replica '${replica.id}' must be failed over and committed before it is retired (state: ${f?.state ?? 'replica'})`,
      { details: { state: f?.state ?? 'replica' } },
    );
  }
  for (const c of (await ctx.target.pointCheckpoints(vm)).reverse()) {
    await ctx.link.call(REMOVE_CHECKPOINT, { vm: vm.row.Name, name: c.Name });
  }
  await ctx.faultHook?.('retire:points-deleted');
  const record = {
    replikitRetired: {
      name: vm.identity.replica,
      of: vm.identity.of,
      pointId: f.pointId,
      retiredAt: new Date().toISOString(),
      dir: vm.identity.dir,
    },
  };
  await ctx.link.call(SET_VM_NOTES, { name: vm.row.Name, notes: JSON.stringify(record) });
  await ctx.faultHook?.('retire:unmarked');
  await dropReplicaFiles(vm.identity.dir);
}

async function dropReplicaFiles(dir: string): Promise<void> {
  for (const name of REPLICA_ONLY) await rm(join(dir, name), { force: true });
}
