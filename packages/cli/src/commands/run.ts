import { NotFoundError, type ReplicationEngine, type RunRecord } from '@replikit/core';
import type { CliContext } from '../context.js';
import { createEngine } from '../create-engine.js';
import { driverPackageOf, loadDriverPackages } from '../drivers.js';
import { loadJobForCli } from '../job-file.js';
import { attachProgressView } from '../output/progress-view.js';
import { renderRunSummary } from '../output/run-summary.js';
import { detachRemovals } from '../removal-handoff.js';

/**
 * Runs `work` with the progress view attached to `engine`, detaching it afterwards. In the
 * `replikit` process itself ({@link CliContext.oneShot}), the file driver's background removals
 * go to a detached process when `work` ends, so that the command need not wait for them.
 */
export async function withProgress<T>(
  engine: ReplicationEngine,
  context: CliContext,
  work: () => Promise<T>,
): Promise<T> {
  const detach = attachProgressView(engine, { stream: context.stderr });
  const removeLater = context.oneShot ? detachRemovals() : undefined;
  try {
    return await work();
  } finally {
    removeLater?.();
    detach();
  }
}

/** `replikit run <job> [--full]`: runs a job once (every block with `--full`) and prints its summary. */
export async function runCommand(
  context: CliContext,
  file: string,
  stateDir: string,
  options: { full?: boolean } = {},
): Promise<number> {
  const job = await loadJobForCli(file, context.cwd);
  const [missing] = await loadDriverPackages(job);
  if (missing !== undefined) {
    throw new NotFoundError(
      `the driver of kind '${missing}' is not installed; install it with \`npm install ${driverPackageOf(missing)}\` beside @replikit/cli`,
    );
  }
  const engine = createEngine(stateDir, context.env);
  const record: RunRecord = await withProgress(engine, context, () =>
    engine.run(job, {
      signal: context.signal,
      ...(context.stop ? { suspend: context.stop } : {}),
      full: options.full === true,
    }),
  );
  context.stdout.write(`${renderRunSummary(record)}\n`);
  return 0;
}

/**
 * `replikit resume <runId> [--rollback | --abandon]`: continues a run that stopped, rolls back its
 * own writes, or abandons it (ends it without reverting anything, releasing its replica).
 */
export async function resumeCommand(
  context: CliContext,
  runId: string,
  stateDir: string,
  options: { rollback: boolean; abandon?: boolean },
): Promise<number> {
  const engine = createEngine(stateDir, context.env);
  const record = await withProgress(engine, context, () =>
    engine.resume(runId, {
      rollback: options.rollback,
      abandon: options.abandon ?? false,
      signal: context.signal,
      ...(context.stop ? { suspend: context.stop } : {}),
    }),
  );
  context.stdout.write(`${renderRunSummary(record)}\n`);
  const ended = (options.rollback || options.abandon) && record.state === 'cancelled';
  return record.state === 'completed' || ended ? 0 : 1;
}
