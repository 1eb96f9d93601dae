import { FileStateStore, NotFoundError } from '@replikit/core';
import { UsageError } from '../cli-error.js';
import type { CliContext } from '../context.js';

/**
 * `replikit daemon pause|resume <job>...`: saves the request in the state folder
 * (`schedule-requests/<job>.json`); a running daemon applies it within a second (it polls), a
 * stopped one when it starts. `resume` lifts a pause and a hold (a failure that needed a decision).
 * Only jobs the daemon has scheduled with this state folder are known.
 */
export async function daemonRequestCommand(
  context: CliContext,
  action: 'pause' | 'resume',
  jobs: readonly string[],
  stateDir: string,
): Promise<number> {
  if (jobs.length === 0) throw new UsageError(`daemon ${action} needs at least one job name`);
  const store = new FileStateStore(stateDir);
  const known = new Set((await store.listSchedules()).map((state) => state.job));
  for (const job of jobs) {
    if (!known.has(job)) {
      throw new NotFoundError(
        `no job '${job}' is scheduled with the state folder ${stateDir}; \`replikit status\` lists the jobs the daemon has scheduled`,
      );
    }
  }
  for (const job of jobs) {
    await store.saveScheduleRequest({ version: 1, job, paused: action === 'pause', at: new Date().toISOString() });
    context.stdout.write(
      `${action === 'pause' ? 'pause' : 'resume'} of job '${job}' saved; a running daemon applies it within a second\n`,
    );
  }
  return 0;
}
