import type { Hypervisor, Snapshot } from '../../contracts/hypervisor.js';
import { isTerminal } from '../run-state.js';
import { dropSnapshot, RUN_LABEL_PREFIX } from './snapshot-stage.js';
import type { RunContext } from './stage.js';

/**
 * Deletes the source snapshots that runs of this job left after they ended without completing:
 * the snapshot call of a killed process can reach the source after the run was rolled back, so
 * nothing undid it. A snapshot is deleted only when its label is `replikit-<runId>` of a run of
 * this job journaled in this run's state store, that run ended failed or cancelled, and it is not
 * `base` (the next incremental's). Snapshots of other stores, other jobs and users are left alone.
 * A failure to list or delete is a `W_CLEANUP` warning.
 */
export async function dropFinishedRunSnapshots(
  ctx: RunContext,
  source: Hypervisor,
  vmId: string,
  base: Snapshot | undefined,
): Promise<void> {
  const prefix = `${RUN_LABEL_PREFIX}${ctx.record.job.name}-`;
  let snapshots: Snapshot[];
  try {
    snapshots = await source.listSnapshots(vmId, { signal: ctx.signal });
  } catch (error) {
    if (ctx.signal.aborted) throw error;
    ctx.warn(
      'W_CLEANUP',
      `could not list the snapshots of VM ${vmId} to remove failed runs' ones: ${(error as Error).message}`,
    );
    return;
  }
  for (const snapshot of snapshots) {
    if (!snapshot.label.startsWith(prefix) || snapshot.id === base?.id) continue;
    const runId = snapshot.label.slice(RUN_LABEL_PREFIX.length);
    if (runId === ctx.record.runId) continue;
    const run = await ctx.deps.store.loadRun(runId);
    if (run === undefined || run.job.name !== ctx.record.job.name) continue;
    if (!isTerminal(run.state) || run.state === 'completed') continue;
    await dropSnapshot(ctx, source, snapshot, true);
  }
}
