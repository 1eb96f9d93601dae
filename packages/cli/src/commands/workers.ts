import { formatBytes, formatDuration } from '@replikit/core';
import { listWorkers, PostgresStateStore } from '@replikit/store-postgres';
import { UsageError } from '../cli-error.js';
import type { CliContext } from '../context.js';
import { renderTable } from '../output/table.js';

/**
 * `replikit workers --store URL [--json]`: every worker of the cluster the shared store has seen:
 * its last heartbeat's age, whether it schedules, the runs it carries out now, and its counters
 * (runs completed, runs failed, bytes sent) since it started.
 */
export async function workersCommand(
  context: CliContext,
  url: string | undefined,
  options: { json: boolean },
): Promise<number> {
  if (url === undefined) throw new UsageError('workers needs --store postgres://… (the cluster’s shared store)');
  const store = await PostgresStateStore.open({ connectionString: url });
  try {
    const workers = await listWorkers(store);
    if (options.json) {
      context.stdout.write(`${JSON.stringify(workers, null, 2)}\n`);
      return 0;
    }
    if (workers.length === 0) {
      context.stdout.write(`no worker has started on ${store.location}\n`);
      return 0;
    }
    const rows = workers.map((w) => [
      w.worker,
      w.stoppedAt ? `stopped ${w.stoppedAt}` : `${formatDuration(Math.round(w.heartbeatAgeSeconds * 1000))} ago`,
      w.scheduler && !w.stoppedAt ? 'yes' : '',
      w.running
        .map(
          (r) =>
            `${r.job}${r.runId ? ` (${r.runId})` : ''}${r.waitingFor ? ` waiting for a slot of ${r.waitingFor}` : ''}`,
        )
        .join(', ') || '-',
      String(w.runsDone),
      String(w.runsFailed),
      formatBytes(w.bytesSent),
    ]);
    context.stdout.write(
      `${renderTable(
        [
          { header: 'worker' },
          { header: 'heartbeat' },
          { header: 'scheduler' },
          { header: 'running' },
          { header: 'done', align: 'right' },
          { header: 'failed', align: 'right' },
          { header: 'sent', align: 'right' },
        ],
        rows,
      )}\n`,
    );
    return 0;
  } finally {
    await store.close();
  }
}
