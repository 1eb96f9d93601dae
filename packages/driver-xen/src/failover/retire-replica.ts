import { FailedOverError, type OperationOptions, type Replica } from '@replikit/core';
import { REPLICA_NAME_KEY, REPLICA_OF_KEY } from '../xen-replica-keys.js';
import type { XenFailoverContext } from './failover-context.js';
import { RETIRED_KEY } from './failover-keys.js';
import { assertReplicaConfig, configOf, storedMark, updateConfig, vmRefOf } from './vm-config.js';

/**
 * See `FailoverHooks.retireReplica`. The replica's restore points (snapshots) are deleted, then
 * in one `VM.set_other_config` every `replikit:` key goes and {@link RETIRED_KEY} records the
 * replica name and source it had, so `ensureReplica` of that name refuses the VM (`E_CONFLICT`)
 * and no run ever overwrites it. Retiring again changes nothing.
 */
export async function retireReplica(
  ctx: XenFailoverContext,
  replica: Replica,
  options?: OperationOptions,
): Promise<void> {
  const vmRef = await vmRefOf(ctx, replica.id, options);
  const config = await configOf(ctx, vmRef, options);
  if (config[REPLICA_NAME_KEY] === undefined && config[RETIRED_KEY] !== undefined) return; // retired already
  assertReplicaConfig(config, replica.id);
  const mark = storedMark(config, replica.id);
  if (mark?.state !== 'committed') {
    throw new FailedOverError(
      `replica '${replica.id}' must be failed over and committed before it is retired (state: ${mark?.state ?? 'replica'})`,
      { details: { state: mark?.state ?? 'replica' } },
    );
  }
  for (const point of await ctx.target.listPoints(replica, options)) {
    await ctx.target.deletePoint(replica, point, options);
  }
  await ctx.faultHook?.('retire:points-deleted');
  await updateConfig(
    ctx,
    vmRef,
    (c) => {
      const plain = Object.fromEntries(Object.entries(c).filter(([k]) => !k.startsWith('replikit:')));
      const retired = {
        name: c[REPLICA_NAME_KEY],
        of: c[REPLICA_OF_KEY],
        pointId: mark.pointId,
        retiredAt: new Date().toISOString(),
      };
      return { ...plain, [RETIRED_KEY]: JSON.stringify(retired) };
    },
    options,
  );
  await ctx.faultHook?.('retire:unmarked');
}
