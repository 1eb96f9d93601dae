import type { CloneInfo, CloneNetwork } from '../contracts/failover.js';
import type { RestorePoint } from '../contracts/hypervisor.js';
import { isReplikitError, NotFoundError } from '../errors.js';
import type { HealthVerdict } from './failover-record.js';
import { checkClone, type HealthCheckOptions } from './health-check.js';
import { hookOf, type OperationContext } from './operation-context.js';

/** Options of a test failover. */
export interface TestFailoverOptions extends HealthCheckOptions {
  /** The restore point to boot (its id); the newest when omitted. */
  pointId?: string;
  /**
   * How the clone is connected.
   * @default { mode: 'isolated' }
   */
  network?: CloneNetwork;
}

/** What a test failover reports. */
export interface TestFailoverResult {
  /** The operation's id. */
  operationId: string;
  /** The restore point booted. */
  point: RestorePoint;
  /** The clone (deleted by the time this resolves). */
  clone: CloneInfo;
  /** The health check's verdict. */
  verdict: HealthVerdict;
}

/**
 * A test failover: clones a restore point into a disposable VM (isolated or mapped), starts it,
 * judges it, tears it down. The replica and its restore points are never changed, and runs of the
 * job go on meanwhile. Each step is journaled: after a crash the resume tears the clone down.
 */
export async function runTestFailover(
  ctx: OperationContext,
  options: TestFailoverOptions,
  resuming: boolean,
): Promise<TestFailoverResult> {
  const target = await ctx.target();
  const clone = hookOf(target, 'cloneRestorePoint');
  const destroy = hookOf(target, 'destroyClone');
  const replica = await ctx.replica();
  const name = `${replica.name}-test-${ctx.op.id.slice(-6)}`.slice(-200);
  // The newest point may move while it is cloned (runs go on): then the new newest is cloned.
  const { point, clone: made } = await ctx.step('clone', async () => {
    // A crash after the clone was made and before this step was journaled: adopt that clone.
    const left = (await hookOf(target, 'listClones')(replica)).find((c) => c.operationId === ctx.op.id);
    if (left) {
      const known = (await target.listRestorePoints(replica)).find((p) => p.id === left.pointId);
      const point: RestorePoint = known ?? {
        id: left.pointId,
        replicaId: replica.id,
        label: '',
        createdAt: left.createdAt,
      };
      return { point, clone: left };
    }
    for (let attempt = 0; ; attempt++) {
      const points = await target.listRestorePoints(replica);
      const chosen = options.pointId ? points.find((p) => p.id === options.pointId) : points[points.length - 1];
      if (!chosen) {
        throw new NotFoundError(
          options.pointId
            ? `replica '${replica.name}' has no restore point ${options.pointId}; 'replikit points list' lists them`
            : `replica '${replica.name}' has no restore point yet; run the job first`,
        );
      }
      try {
        const info = await clone(replica, chosen, {
          name,
          operationId: ctx.op.id,
          ...(options.network ? { network: options.network } : {}),
        });
        return { point: chosen, clone: info };
      } catch (error) {
        if (options.pointId || attempt >= 2 || !isReplikitError(error, 'E_CONFLICT')) throw error;
      }
    }
  });
  // A resumed test failover does not boot the clone again: it only tears it down.
  const verdict = await ctx.step('verdict', async () =>
    resuming
      ? ({ passed: false, started: false, reason: 'interrupted before a verdict; the clone was torn down' } as const)
      : checkClone(target, made, options),
  );
  await ctx.step('teardown', async () => {
    await target.power(made.id, 'shutdown').catch(() => undefined);
    await destroy(made.id);
    return true;
  });
  return { operationId: ctx.op.id, point, clone: made, verdict };
}
