import { hostname } from 'node:os';
import { ConflictError, type OperationOptions, type ReplicaOwner } from '@replikit/core';
import { xapiCodeOf } from '../xapi/xapi-error.js';
import { REPLICA_OWNER_KEY } from '../xen-replica-keys.js';
import { sig, type XenFailoverContext } from './failover-context.js';
import { failoverRunId } from './failover-keys.js';
import { configOf } from './vm-config.js';

function isDuplicateKey(error: unknown): boolean {
  const details = (error as { details?: { xapiCode?: unknown } }).details;
  const code =
    typeof details?.xapiCode === 'string'
      ? details.xapiCode
      : xapiCodeOf((error as { cause?: unknown }).cause ?? error)?.code;
  return code === 'MAP_DUPLICATE_KEY';
}

/**
 * Runs `fn` while the replica is held by its failover pseudo-run (`failover-<replica uuid>`), the
 * same `other_config` hold a run takes (`add_to_other_config` is atomic): no run claims it
 * meanwhile, and a run that holds it makes this reject with `E_CONFLICT`. A hold a crashed
 * failover hook left is taken over by the next call.
 */
export async function withFailoverHold<T>(
  ctx: XenFailoverContext,
  replicaId: string,
  vmRef: string,
  fn: () => Promise<T>,
  options?: OperationOptions,
): Promise<T> {
  const runId = failoverRunId(replicaId);
  const owner: ReplicaOwner = { runId, host: hostname(), pid: process.pid, startedAt: new Date().toISOString() };
  try {
    await ctx.connection.call(
      'VM.add_to_other_config',
      [vmRef, REPLICA_OWNER_KEY, JSON.stringify(owner)],
      sig(options),
    );
  } catch (error) {
    if (!isDuplicateKey(error)) throw error;
    const raw = (await configOf(ctx, vmRef, options))[REPLICA_OWNER_KEY] ?? '';
    let holder: Partial<ReplicaOwner> = {};
    try {
      holder = JSON.parse(raw) as ReplicaOwner;
    } catch {
      // an unreadable hold is someone else's
    }
    if (holder.runId !== runId) {
      throw new ConflictError(
        `replica '${replicaId}' is held by run ${holder.runId ?? '(unreadable)'}; finish, roll back or abandon that run ('replikit resume') before failing over`,
        { details: { owner: holder } },
      );
    }
  }
  try {
    return await fn();
  } finally {
    await dropFailoverHold(ctx, replicaId, vmRef, options, true);
  }
}

/**
 * Drops the failover pseudo-run's hold of the replica, if it is there (a run's hold is left as it
 * is). A hook whose work a crashed call already finished (the mark written or dropped) calls it
 * before it returns early: that call died before it dropped its hold, and no later hook would,
 * so the job's next run would be refused (`E_CONFLICT`).
 */
export async function dropFailoverHold(
  ctx: XenFailoverContext,
  replicaId: string,
  vmRef: string,
  options?: OperationOptions,
  quiet = false,
): Promise<void> {
  const read = configOf(ctx, vmRef, options);
  const raw = (await (quiet ? read.catch(() => ({}) as Record<string, string>) : read))[REPLICA_OWNER_KEY];
  if (raw?.includes(`"runId":${JSON.stringify(failoverRunId(replicaId))}`)) {
    await ctx.connection.call('VM.remove_from_other_config', [vmRef, REPLICA_OWNER_KEY], sig(options));
  }
}
