import { FileStateStore, formatDuration, readJobStatuses } from '@replikit/core';
import type { CliContext } from '../context.js';
import { renderTable } from '../output/table.js';

const seconds = (value: number | undefined) => (value === undefined ? '-' : formatDuration(value * 1000));
const time = (iso: string | undefined) => (iso ? iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '-');

/**
 * `replikit status [--json]`: every job the daemon has scheduled with this state folder: its
 * state, last run (outcome and why it failed), achieved RPO against its target, next due time and
 * RPO debt. The RPO is worked out now, from the newest complete restore point's time.
 */
export async function statusCommand(
  context: CliContext,
  stateDir: string,
  options: { json: boolean },
): Promise<number> {
  const statuses = await readJobStatuses(new FileStateStore(stateDir));
  if (options.json) {
    context.stdout.write(`${JSON.stringify(statuses, null, 2)}\n`);
    return 0;
  }
  if (statuses.length === 0) {
    context.stdout.write(`no scheduled jobs in ${stateDir} (\`replikit daemon\` schedules them)\n`);
    return 0;
  }
  const rows = statuses.map((s) => [
    s.job,
    s.state,
    s.lastRun ? `${s.lastRun.outcome} ${time(s.lastRun.finishedAt)}` : '-',
    s.lastRun?.code
      ? `${s.lastRun.code} (${s.lastRun.errorClass}) ${s.lastRun.message?.split('\n')[0] ?? ''}`
      : s.held
        ? `held: ${s.held.code}`
        : '',
    `${seconds(s.achievedRpoSeconds)} / ${seconds(s.rpoTargetSeconds)}`,
    s.rpoLevel,
    time(s.retryAt ?? s.nextDue),
    String(s.rpoDebtSlots),
  ]);
  context.stdout.write(
    `${renderTable(
      [
        { header: 'job' },
        { header: 'state' },
        { header: 'last run' },
        { header: 'reason' },
        { header: 'RPO / target', align: 'right' },
        { header: 'level' },
        { header: 'next' },
        { header: 'debt', align: 'right' },
      ],
      rows,
    )}\n`,
  );
  return 0;
}
