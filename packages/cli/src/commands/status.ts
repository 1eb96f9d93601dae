import {
  FileFailoverStore,
  FileStateStore,
  formatDuration,
  type JobSpec,
  type JobStatus,
  type Orphan,
  readJobStatuses,
} from '@replikit/core';
import type { CliContext } from '../context.js';
import { loadDriverPackages } from '../drivers.js';
import { orphansOfJob } from '../job-orphans.js';
import { renderTable } from '../output/table.js';

const seconds = (value: number | undefined) => (value === undefined ? '-' : formatDuration(value * 1000));
const time = (iso: string | undefined) => (iso ? iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '-');

/** The reason column: why the job is held or paused, or why its last run failed. */
function reasonOf(s: JobStatus): string {
  const failed = s.lastRun?.code
    ? `${s.lastRun.code}${s.lastRun.errorClass ? ` (${s.lastRun.errorClass})` : ''} ${s.lastRun.message?.split('\n')[0] ?? ''}`
    : '';
  if (s.held) return `held: ${s.held.code}${failed ? `; ${failed}` : ''}`;
  if (s.state === 'held' && s.window) {
    return `maintenance window closed; reopens ${s.window.opensAt ? time(s.window.opensAt) : 'never'}`;
  }
  if (s.paused) return `paused (replikit daemon resume ${s.job})`;
  return failed;
}

/**
 * `replikit status [--json]`: every job the daemon has scheduled with this state folder: its
 * state, last run (outcome and why it failed), achieved RPO against its target, next due time and
 * RPO debt. The RPO is worked out now, from the newest complete restore point's time.
 */
export async function statusCommand(
  context: CliContext,
  stateDir: string,
  options: { json: boolean; orphans?: boolean; store?: string },
): Promise<number> {
  if (options.orphans) return orphansCommand(context, stateDir, options.json);
  if (options.store !== undefined) return sharedStatus(context, options.store, options.json);
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
    reasonOf(s),
    `${seconds(s.achievedRpoSeconds)} / ${seconds(s.rpoTargetSeconds)}`,
    s.rpoLevel,
    time(s.retryAt ?? s.window?.opensAt ?? s.nextDue),
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

/**
 * `replikit status --store URL [--json]`: the jobs of a cluster's shared store, with the worker
 * that runs each job's run now (from the workers' heartbeats).
 */
async function sharedStatus(context: CliContext, url: string, json: boolean): Promise<number> {
  // Loaded only here: a plain `replikit status` (file store) does not load pg and pg-boss.
  const { listWorkers, PostgresStateStore } = await import('@replikit/store-postgres');
  const store = await PostgresStateStore.open({ connectionString: url });
  try {
    const statuses = await readJobStatuses(store);
    const runningOn = new Map<string, string>();
    for (const worker of await listWorkers(store)) {
      if (worker.stoppedAt) continue;
      for (const run of worker.running) runningOn.set(run.job, `${worker.worker}${run.runId ? ` (${run.runId})` : ''}`);
    }
    if (json) {
      const rows = statuses.map((s) => ({ ...s, worker: runningOn.get(s.job) ?? null }));
      context.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
      return 0;
    }
    if (statuses.length === 0) {
      context.stdout.write(`no scheduled jobs in ${store.location} (\`replikit daemon --store\` schedules them)\n`);
      return 0;
    }
    const rows = statuses.map((s) => [
      s.job,
      s.state,
      runningOn.get(s.job) ?? '-',
      s.lastRun ? `${s.lastRun.outcome} ${time(s.lastRun.finishedAt)}` : '-',
      reasonOf(s),
      `${seconds(s.achievedRpoSeconds)} / ${seconds(s.rpoTargetSeconds)}`,
      time(s.retryAt ?? s.window?.opensAt ?? s.nextDue),
    ]);
    context.stdout.write(
      `${renderTable(
        [
          { header: 'job' },
          { header: 'state' },
          { header: 'worker' },
          { header: 'last run' },
          { header: 'reason' },
          { header: 'RPO / target', align: 'right' },
          { header: 'next' },
        ],
        rows,
      )}\n`,
    );
    return 0;
  } finally {
    await store.close();
  }
}

/** What `status --orphans` reports for one job. */
interface JobOrphans {
  job: string;
  orphans: Orphan[];
  /** The side whose driver could not be reached: its orphans are unknown. */
  unreachable?: 'source' | 'target';
}

/**
 * `replikit status --orphans [--json]`: for every job that has run with this state folder (its
 * newest run's job), what it left that nothing will clean up: failover clones no operation owns,
 * snapshots of its runs that are neither the next base nor in use. Retention never prunes these.
 * Exit status 0 (1 when a job's side could not be reached, so its orphans are unknown).
 */
async function orphansCommand(context: CliContext, stateDir: string, json: boolean): Promise<number> {
  const store = new FileStateStore(stateDir);
  const failovers = new FileFailoverStore(stateDir);
  const newest = new Map<string, { spec: JobSpec; startedAt: string }>();
  for (const run of await store.listRuns()) {
    const known = newest.get(run.job.name);
    if (!known || run.startedAt > known.startedAt)
      newest.set(run.job.name, { spec: run.job, startedAt: run.startedAt });
  }
  const results: JobOrphans[] = [];
  for (const [name, { spec }] of [...newest].sort(([a], [b]) => a.localeCompare(b))) {
    await loadDriverPackages(spec);
    results.push({ job: name, ...(await orphansOfJob(spec, store, await failovers.load(name))) });
  }
  if (json) {
    context.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
  } else if (results.length === 0) {
    context.stdout.write(`no runs in ${stateDir}: no job can have orphans\n`);
  } else {
    for (const r of results) {
      if (r.unreachable)
        context.stdout.write(`job '${r.job}': its ${r.unreachable} could not be reached; orphans unknown\n`);
      else if (r.orphans.length === 0) context.stdout.write(`job '${r.job}': no orphans\n`);
      for (const o of r.orphans)
        context.stdout.write(`job '${r.job}': orphan ${o.kind} ${o.id} (${o.name}): ${o.reason}\n`);
    }
  }
  return results.some((r) => r.unreachable) ? 1 : 0;
}
