import { FailedOverError, type OperationOptions, type Replica } from '@replikit/core';
import type { XenFailoverContext } from './failover-context.js';
import { assertReplicaConfig, configOf, storedMark, updateConfig, vmRefOf, withMark } from './vm-config.js';

/**
 * See `FailoverHooks.commitFailover`: the mark becomes `committed`. Undo kept nothing but the
 * restore point's snapshot, which stays a restore point of the replica.
 */
export async function commitFailover(
  ctx: XenFailoverContext,
  replica: Replica,
  options?: OperationOptions,
): Promise<void> {
  const vmRef = await vmRefOf(ctx, replica.id, options);
  const config = await configOf(ctx, vmRef, options);
  assertReplicaConfig(config, replica.id);
  const mark = storedMark(config, replica.id);
  if (!mark || mark.state === 'promoting') {
    throw new FailedOverError(
      `replica '${replica.id}' is not failed over${mark ? ' yet (its promotion did not finish)' : ''}; there is nothing to commit`,
      { details: { state: mark?.state ?? 'replica' } },
    );
  }
  if (mark.state === 'committed') return;
  await updateConfig(ctx, vmRef, (c) => withMark(c, { state: 'committed', pointId: mark.pointId }), options);
}
