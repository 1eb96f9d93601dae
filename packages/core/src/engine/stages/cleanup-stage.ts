import type { RunOutcome } from '../run-state.js';
import { releaseReplica } from './replica-rollback.js';
import { dropSnapshot } from './snapshot-stage.js';
import type { RunContext, Stage } from './stage.js';

/**
 * `cleanup`, entered from every path. A completed run drops the base snapshot its commit replaced
 * and releases its replica. A run that did not complete calls the `undo` of every stage that ran,
 * in reverse order (`stages` is the run's order). A failing undo stops the cleanup, so
 * what comes before it in the run (the replica's hold) is kept: the run stays in `cleanup`, and
 * `resume` tries again (every undo is safe to repeat).
 *
 * A run that stopped before it took a snapshot or found its replica left nothing on either side:
 * no undo needs the drivers, so a driver that cannot be created (an agent that is down, a wrong
 * transport section) fails the run instead of leaving it unfinished in cleanup.
 */
export async function cleanUp(ctx: RunContext, stages: readonly Stage[], outcome: RunOutcome): Promise<void> {
  const record = ctx.record;
  if (outcome === 'completed') return finish(ctx);
  const ending = record.stages.cleanup?.abandoned ? 'abandon' : 'rollback';
  if (ending === 'abandon' && !record.stages.prepare) {
    ctx.warn('W_ABANDONED', `run ${record.runId} was abandoned before it touched a replica`);
  }
  for (const stage of [...stages].reverse()) {
    if (stage.undo && stage.ran?.(ctx)) await stage.undo(ctx, ending);
  }
}

/** A completed run: the previous run's snapshot is no longer a base; the replica's hold ends. */
async function finish(ctx: RunContext): Promise<void> {
  const { prepare, snapshot } = ctx.record.stages;
  const base = prepare?.start?.baseSnapshot;
  if (base && base.id !== snapshot?.snapshot.id) {
    const { source } = await ctx.drivers();
    await dropSnapshot(ctx, source, base, true);
  }
  if (prepare) {
    const { target } = await ctx.drivers();
    await releaseReplica(ctx, target, prepare.replica);
  }
}
