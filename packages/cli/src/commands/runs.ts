import { FileStateStore, formatBytes, toRunRecord } from '@replikit/core';
import type { CliContext } from '../context.js';
import { formatDuration } from '../output/format.js';
import { planReasons, runDurationMs } from '../output/run-summary.js';
import { renderTable } from '../output/table.js';

/** `replikit runs [--json]`: lists the journaled runs, oldest first. */
export async function runsCommand(context: CliContext, stateDir: string, options: { json: boolean }): Promise<number> {
  const runs = (await new FileStateStore(stateDir).listRuns()).map(toRunRecord);
  if (options.json) {
    context.stdout.write(`${JSON.stringify(runs, null, 2)}\n`);
    return 0;
  }
  if (runs.length === 0) {
    context.stdout.write(`no runs in ${stateDir}\n`);
    return 0;
  }
  const rows = runs.map((run) => [
    run.runId,
    run.job.name,
    run.state,
    run.startedAt.replace('T', ' ').replace(/\.\d+Z$/, 'Z'),
    formatDuration(runDurationMs(run)),
    planReasons(run),
    formatBytes(run.stats.bytesSent),
    run.error ? run.error.message.split('\n')[0]! : '',
  ]);
  context.stdout.write(
    `${renderTable(
      [
        { header: 'run' },
        { header: 'job' },
        { header: 'state' },
        { header: 'started' },
        { header: 'time', align: 'right' },
        { header: 'why' },
        { header: 'sent', align: 'right' },
        { header: 'error' },
      ],
      rows,
    )}\n`,
  );
  return 0;
}
