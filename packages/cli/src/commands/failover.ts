import {
  type CloneNetwork,
  FailoverEngine,
  type FailoverRecord,
  FileFailoverStore,
  FileStateStore,
  type JobSpec,
  NotFoundError,
  type Orphan,
  type ReversePassStats,
} from '@replikit/core';
import { UsageError } from '../cli-error.js';
import type { CliContext } from '../context.js';
import { createEngine } from '../create-engine.js';
import { driverPackageOf, loadDriverPackages } from '../drivers.js';
import { loadJobForCli } from '../job-file.js';
import { orphansOfJob } from '../job-orphans.js';
import { withProgress } from './run.js';

/** Options of `replikit failover`. */
export interface FailoverCommandOptions {
  /** `--point ID`: the restore point (test, unplanned). */
  point?: string;
  /** `--force`: unplanned failover past the split-brain guard. */
  force?: boolean;
  /** `--map-network FROM=TO` (repeated): a test clone's networks; isolated without. */
  mapNetwork?: string[];
  /** `--shutdown-timeout SECONDS` (planned, failback). */
  shutdownTimeout?: string;
  /** `--full`: reverse or fail back with a full copy when the two sides share no restore point. */
  full?: boolean;
  /** `--json`. */
  json?: boolean;
}

const SUBCOMMANDS = [
  'test',
  'planned',
  'unplanned',
  'undo',
  'commit',
  'permanent',
  'reverse',
  'failback',
  'resume',
  'status',
] as const;

/** One line per reverse pass: what it sent and how each disk chose its blocks. */
function renderPass(name: string, pass: ReversePassStats): string {
  const disks = pass.disks
    .map((d) => {
      const known =
        d.blocksPromoted === undefined && d.blocksOriginal === undefined
          ? ''
          : ` (replica ${d.blocksPromoted ?? '?'}, original ${d.blocksOriginal ?? '?'})`;
      return `disk ${d.position} ${d.mode}${known}: ${d.blocksSent}`;
    })
    .join('; ');
  return `${name}: ${pass.blocksSent} blocks of ${pass.blockSize} bytes sent onto the original [${disks}]`;
}

/** The clone network of `--map-network FROM=TO ...`: isolated without any. */
function networkOf(values: string[] | undefined): CloneNetwork {
  if (!values || values.length === 0) return { mode: 'isolated' };
  const map: Record<string, string> = {};
  for (const value of values) {
    const at = value.indexOf('=');
    if (at < 1 || at === value.length - 1) throw new UsageError(`--map-network takes FROM=TO, got '${value}'`);
    map[value.slice(0, at)] = value.slice(at + 1);
  }
  return { mode: 'mapped', map };
}

/** Seconds as milliseconds, for `--shutdown-timeout`. */
function secondsOf(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const seconds = Number(value);
  if (!Number.isFinite(seconds) || seconds <= 0)
    throw new UsageError(`--shutdown-timeout takes seconds > 0, got '${value}'`);
  return Math.round(seconds * 1000);
}

function renderRecord(record: FailoverRecord, orphans: Orphan[]): string {
  const lines = [`job '${record.job}': ${record.state}${record.point ? ` at restore point ${record.point.id}` : ''}`];
  if (record.operation) {
    lines.push(
      `unfinished ${record.operation.kind} operation ${record.operation.id} (steps done: ${Object.keys(record.operation.done).join(', ') || 'none'}); finish it with 'replikit failover resume'`,
    );
  }
  const last = record.history.at(-1);
  if (last) {
    const verdict = last.verdict
      ? `, verdict ${last.verdict.passed ? 'passed' : `failed: ${last.verdict.reason}`}`
      : '';
    const sent = last.sent ? `, ${last.sent.blocks} blocks sent onto the original` : '';
    lines.push(`last operation: ${last.kind} ${last.outcome} at ${last.endedAt}${verdict}${sent}`);
  }
  for (const orphan of orphans) lines.push(`orphan ${orphan.kind} ${orphan.id} (${orphan.name}): ${orphan.reason}`);
  return `${lines.join('\n')}\n`;
}

/**
 * `replikit failover test|planned|unplanned|undo|commit|permanent|reverse|failback|resume|status <job>`: the
 * failover family of a job's replica (see docs/failover.md). `test <job> [-- CMD ARG...]` runs CMD
 * without a shell as the health check, with the clone in its environment. Exit status: 0 done (a
 * test whose verdict passed), 1 a test whose verdict failed or an operation that failed.
 */
export async function failoverCommand(
  context: CliContext,
  args: string[],
  stateDir: string,
  options: FailoverCommandOptions,
): Promise<number> {
  const [sub, file, ...command] = args;
  if (!SUBCOMMANDS.includes(sub as (typeof SUBCOMMANDS)[number])) {
    throw new UsageError(`failover takes ${SUBCOMMANDS.join(', ')}; got ${sub === undefined ? 'nothing' : `'${sub}'`}`);
  }
  if (file === undefined) throw new UsageError(`failover ${sub} takes a job file`);
  if (command.length > 0 && sub !== 'test') throw new UsageError(`only failover test takes a command (after --)`);
  const job: JobSpec = await loadJobForCli(file, context.cwd);
  const [missing] = await loadDriverPackages(job);
  if (missing !== undefined) {
    throw new NotFoundError(
      `the driver of kind '${missing}' is not installed; install it with \`npm install ${driverPackageOf(missing)}\` beside @replikit/cli`,
    );
  }
  const replication = createEngine(stateDir, context.env);
  const stateStore = new FileStateStore(stateDir);
  const failover = new FailoverEngine({ stateStore, failoverStore: new FileFailoverStore(stateDir), replication });
  const print = (value: unknown, text: string) =>
    context.stdout.write(options.json ? `${JSON.stringify(value, null, 2)}\n` : text);
  try {
    switch (sub) {
      case 'test': {
        const result = await failover.test(job, {
          ...(options.point ? { pointId: options.point } : {}),
          network: networkOf(options.mapNetwork),
          ...(command.length > 0 ? { command } : {}),
        });
        const v = result.verdict;
        print(
          result,
          `test failover of job '${job.name}' at restore point ${result.point.id}: clone ${result.clone.name} ${v.passed ? 'passed' : `failed (${v.reason})`}; the clone is deleted\n`,
        );
        return v.passed ? 0 : 1;
      }
      case 'planned': {
        const timeout = secondsOf(options.shutdownTimeout);
        const result = await withProgress(replication, context, () =>
          failover.planned(job, timeout === undefined ? {} : { shutdownTimeoutMs: timeout }),
        );
        print(
          result,
          `planned failover of job '${job.name}': runs ${result.runs.first} and ${result.runs.final}, source shut down${result.forced ? ' (forced)' : ''}, replica promoted at ${result.point.id} and started\n`,
        );
        return 0;
      }
      case 'unplanned': {
        const record = await failover.unplanned(job, {
          ...(options.point ? { pointId: options.point } : {}),
          force: options.force === true,
        });
        print(
          record,
          `unplanned failover of job '${job.name}': replica promoted at ${record.point?.id} and started; 'replikit failover undo' returns it, 'commit' makes it final\n`,
        );
        return 0;
      }
      case 'undo':
        print(
          await failover.undo(job),
          `failover of job '${job.name}' undone: the replica is back at its restore point and replicates again\n`,
        );
        return 0;
      case 'commit':
        print(
          await failover.commit(job),
          `failover of job '${job.name}' committed: no undo any more; the job does not run\n`,
        );
        return 0;
      case 'permanent':
        print(
          await failover.permanent(job),
          `permanent failover of job '${job.name}': the replica is the production VM; the job is retired\n`,
        );
        return 0;
      case 'reverse': {
        const result = await failover.reverse(job, { full: options.full === true });
        print(
          result,
          `reverse replication of job '${job.name}' ${result.commonSnapshot ? `from the common snapshot ${result.commonSnapshot.id}` : '(full copy)'}: ${renderPass('pass', result.reverse)}; the replica keeps running\n`,
        );
        return 0;
      }
      case 'failback': {
        const timeout = secondsOf(options.shutdownTimeout);
        const result = await withProgress(replication, context, () =>
          failover.failback(job, {
            full: options.full === true,
            ...(timeout === undefined ? {} : { shutdownTimeoutMs: timeout }),
          }),
        );
        print(
          result,
          [
            `failback of job '${job.name}':`,
            renderPass('first pass (replica running)', result.passes.first),
            `replica shut down${result.forced ? ' (forced)' : ''}`,
            renderPass('final pass', result.passes.final),
            `original started; run ${result.run} made restore point ${result.point.id}, the new common point; the job replicates again\n`,
          ].join('\n'),
        );
        return 0;
      }
      case 'resume': {
        const record = await withProgress(replication, context, () => failover.resume(job));
        print(record, renderRecord(record, []));
        return 0;
      }
      default: {
        const record = await failover.status(job);
        const { orphans } = await orphansOfJob(job, stateStore, record);
        print({ ...record, orphans }, renderRecord(record, orphans));
        return 0;
      }
    }
  } finally {
    await replication.close();
  }
}
