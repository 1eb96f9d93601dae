import type { Hypervisor, Snapshot } from '../../contracts/hypervisor.js';
import { isReplikitError } from '../../errors.js';
import type { RunContext, Stage } from './stage.js';

/**
 * Deletes a snapshot; one already gone is fine. With `warnOnly` a failure is a `W_CLEANUP`
 * warning instead of an error.
 */
export async function dropSnapshot(
  ctx: RunContext,
  source: Hypervisor,
  snapshot: Snapshot,
  warnOnly: boolean,
): Promise<void> {
  try {
    await source.deleteSnapshot(snapshot);
  } catch (error) {
    // By code, not class: a driver package may bring its own copy of @replikit/core (the CLI's bundle has its own).
    if (isReplikitError(error, 'E_NOT_FOUND')) return;
    if (!warnOnly) throw error;
    ctx.warn('W_CLEANUP', `could not delete snapshot ${snapshot.id}: ${(error as Error).message}`);
  }
}

/** The label a run's source snapshot carries: `replikit-<runId>`. */
export const runLabel = (runId: string): string => `${RUN_LABEL_PREFIX}${runId}`;

/** What a run's snapshot label starts with, before the run id. */
export const RUN_LABEL_PREFIX = 'replikit-';

/** The snapshot carrying this run's label that the journal does not name, if the source has one. */
async function unjournaledSnapshot(ctx: RunContext, source: Hypervisor): Promise<Snapshot | undefined> {
  const label = runLabel(ctx.record.runId);
  try {
    // No signal: a cleanup runs to its end, also after the run was cancelled.
    const vm = await source.getVM(ctx.record.job.source.vm);
    return (await source.listSnapshots(vm.id)).find((s) => s.label === label);
  } catch (error) {
    ctx.warn('W_CLEANUP', `could not look for a snapshot labelled ${label}: ${(error as Error).message}`);
    return undefined;
  }
}

/**
 * `snapshot`: the source VM's snapshot of this run, taken once (adopted again after a crash) and
 * journaled. Undo: the snapshot is deleted (an abandoned run only warns when it cannot be).
 */
export const snapshotStage: Stage = {
  state: 'snapshot',
  async run(ctx: RunContext): Promise<void> {
    const { record, signal } = ctx;
    if (record.stages.snapshot) return;
    const { source } = await ctx.drivers();
    const label = runLabel(record.runId);
    const vm = await source.getVM(record.job.source.vm, { signal });
    // A crash between taking the snapshot and journaling it leaves one with our label: adopt it.
    const existing = (await source.listSnapshots(vm.id, { signal })).find((s) => s.label === label);
    record.stages.snapshot = { snapshot: existing ?? (await source.snapshot(vm.id, label, { signal })) };
    await ctx.save();
  },
  // Entered counts, not only journaled: a run that stopped between taking its snapshot and
  // journaling it (a kill, or a driver that failed after the snapshot existed) left one.
  ran: (ctx) => ctx.record.stages.snapshot !== undefined || ctx.record.history.some((h) => h.state === 'snapshot'),
  async undo(ctx, ending): Promise<void> {
    const { source } = await ctx.drivers();
    const taken = ctx.record.stages.snapshot?.snapshot ?? (await unjournaledSnapshot(ctx, source));
    if (!taken) return;
    await dropSnapshot(ctx, source, taken, ending === 'abandon');
  },
};
