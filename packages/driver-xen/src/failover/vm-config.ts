import {
  FailedOverError,
  InputError,
  NotFoundError,
  type OperationOptions,
  type ReplicaFailoverMark,
} from '@replikit/core';
import { REPLICA_NAME_KEY } from '../xen-replica-keys.js';
import { sig, type XenFailoverContext } from './failover-context.js';
import { FAILOVER_KEY, RETIRED_KEY } from './failover-keys.js';

const UUID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;

/** The ref of the VM with `uuid`, or undefined when the pool has none. */
export async function maybeVmRef(
  ctx: XenFailoverContext,
  uuid: string,
  options?: OperationOptions,
): Promise<string | undefined> {
  if (!UUID.test(uuid)) return undefined;
  try {
    return await ctx.connection.call<string>('VM.get_by_uuid', [uuid], sig(options));
  } catch (error) {
    if ((error as { code?: string }).code === 'E_NOT_FOUND') return undefined;
    throw error;
  }
}

/** The ref of the VM with `uuid`; `E_NOT_FOUND` when the pool has none. */
export async function vmRefOf(ctx: XenFailoverContext, uuid: string, options?: OperationOptions): Promise<string> {
  const ref = await maybeVmRef(ctx, uuid, options);
  if (!ref) throw new NotFoundError(`no VM with uuid '${uuid}' on this pool`);
  return ref;
}

/** The VM's `other_config`. */
export function configOf(ctx: XenFailoverContext, vmRef: string, options?: OperationOptions) {
  return ctx.connection.call<Record<string, string>>('VM.get_other_config', [vmRef], sig(options));
}

/**
 * Rewrites the VM's `other_config` with `change` applied to what is there now, in one
 * `VM.set_other_config` (so a crash leaves the old map or the new one, never a key half moved).
 * Nothing is written when the map does not change.
 */
export async function updateConfig(
  ctx: XenFailoverContext,
  vmRef: string,
  change: (config: Record<string, string>) => Record<string, string>,
  options?: OperationOptions,
): Promise<Record<string, string>> {
  const now = await configOf(ctx, vmRef, options);
  const next = change({ ...now });
  const same =
    Object.keys(next).length === Object.keys(now).length && Object.entries(next).every(([k, v]) => now[k] === v);
  if (!same) await ctx.connection.call('VM.set_other_config', [vmRef, next], sig(options));
  return next;
}

/** A replica's failover mark as kept under {@link FAILOVER_KEY}. */
export interface StoredMark {
  state: 'promoting' | 'promoted' | 'committed';
  pointId: string;
}

/** The stored failover mark of a replica's `other_config`, if any. */
export function storedMark(config: Record<string, string>, replicaId: string): StoredMark | undefined {
  const raw = config[FAILOVER_KEY];
  if (raw === undefined) return undefined;
  try {
    const mark = JSON.parse(raw) as Partial<StoredMark>;
    if (
      (mark.state === 'promoting' || mark.state === 'promoted' || mark.state === 'committed') &&
      typeof mark.pointId === 'string'
    ) {
      return { state: mark.state, pointId: mark.pointId };
    }
  } catch {
    // reported below
  }
  throw new FailedOverError(
    `replica '${replicaId}' has an unreadable ${FAILOVER_KEY} in other_config; fix or remove that key by hand`,
    { details: { raw } },
  );
}

/** The mark as `FailoverHooks.failoverMark` reports it (a promotion under way counts as promoted). */
export function publicMark(mark: StoredMark | undefined): ReplicaFailoverMark {
  if (!mark) return { state: 'replica' };
  return { state: mark.state === 'committed' ? 'committed' : 'promoted', pointId: mark.pointId };
}

/** `config` with the failover mark set to `mark` (dropped when undefined). */
export function withMark(config: Record<string, string>, mark: StoredMark | undefined): Record<string, string> {
  const { [FAILOVER_KEY]: _old, ...rest } = config;
  return mark ? { ...rest, [FAILOVER_KEY]: JSON.stringify(mark) } : rest;
}

/**
 * Throws unless `config` is a replica's: `E_INPUT` for a VM replikit does not replicate into,
 * `E_FAILED_OVER` for one retired by a permanent failover.
 */
export function assertReplicaConfig(config: Record<string, string>, vmId: string): void {
  if (config[REPLICA_NAME_KEY] !== undefined) return;
  if (config[RETIRED_KEY] !== undefined) {
    throw new FailedOverError(
      `VM '${vmId}' was failed over permanently and is no replica any more; it is never written by a run`,
      { details: { state: 'retired' } },
    );
  }
  throw new InputError(`VM '${vmId}' is not a replica (no ${REPLICA_NAME_KEY} in its other_config)`, {
    details: { vmId },
  });
}

/**
 * Refuses a run's claim or writer on a failed-over replica (`E_FAILED_OVER`): no run writes a
 * promoted, committed or retired replica, nor one being promoted.
 */
export function assertNotFailedOver(config: Record<string, string>, replicaId: string): void {
  const mark = storedMark(config, replicaId);
  if (mark) {
    throw new FailedOverError(
      `replica '${replicaId}' is failed over (${mark.state} at restore point ${mark.pointId}); no run writes it until 'replikit failover undo' returns it to replicating`,
      { details: { state: mark.state, pointId: mark.pointId } },
    );
  }
  if (config[REPLICA_NAME_KEY] === undefined && config[RETIRED_KEY] !== undefined) {
    assertReplicaConfig(config, replicaId);
  }
}
