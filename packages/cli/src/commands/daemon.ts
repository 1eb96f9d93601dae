import { readdir, stat } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { join, resolve } from 'node:path';
import {
  Daemon,
  DaemonMetrics,
  formatDuration,
  JobError,
  type JobSpec,
  NotFoundError,
  type WindowOption,
  windowSchema,
} from '@replikit/core';
import { UsageError } from '../cli-error.js';
import type { CliContext } from '../context.js';
import { createEngine } from '../create-engine.js';
import { driverPackageOf, loadDriverPackages } from '../drivers.js';
import { loadJobForCli } from '../job-file.js';
import { attachProgressView } from '../output/progress-view.js';

const JOB_FILE = /\.(ya?ml|json)$/i;

/** The job files of the arguments: each file as given, each folder's `*.yaml`, `*.yml` and `*.json` (not recursive). */
async function jobFilesOf(args: readonly string[], cwd: string): Promise<string[]> {
  const files: string[] = [];
  for (const arg of args) {
    const path = resolve(cwd, arg);
    const info = await stat(path).catch(() => undefined);
    if (!info) throw new NotFoundError(`no job file or folder '${arg}'`);
    if (!info.isDirectory()) {
      files.push(path);
      continue;
    }
    const names = (await readdir(path)).filter((name) => JOB_FILE.test(name) && !name.startsWith('.')).sort();
    if (names.length === 0) throw new NotFoundError(`the folder '${arg}' holds no job file (*.yaml, *.yml, *.json)`);
    files.push(...names.map((name) => join(path, name)));
  }
  return files;
}

/** Serves `metrics.prometheusText()` at `/metrics` on 127.0.0.1:`port`; resolves with the server once listening. */
function serveMetrics(metrics: DaemonMetrics, port: number): Promise<Server> {
  const server = createServer((request, response) => {
    if (request.method !== 'GET' || (request.url ?? '/').split('?')[0] !== '/metrics') {
      response.writeHead(404, { 'content-type': 'text/plain' }).end('not found: the metrics are at /metrics\n');
      return;
    }
    response.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(metrics.prometheusText());
  });
  return new Promise((resolveServer, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolveServer(server));
  });
}

/** Parses `--metrics-port`: 0 (any free port) to 65535. */
function portOf(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const port = Number(value);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new UsageError(`--metrics-port takes a port number from 0 to 65535, got '${value}'`);
  }
  return port;
}

/** Parses `--max-per-host` or `--max-per-target`: a whole number of runs ≥ 1. */
function limitOf(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const limit = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(limit) || limit < 1) {
    throw new UsageError(`${flag} takes a whole number of runs at once, at least 1, got '${value}'`);
  }
  return limit;
}

/**
 * Parses `--window 'CRON for DURATION [in TIME-ZONE]'` (`'0 22 * * 1-5 for 8h in Europe/Paris'`)
 * into a maintenance window, checked as a job's `options.windows` entry is.
 */
export function windowOf(text: string): WindowOption {
  const match = /^\s*(.+?)\s+for\s+(\S+)(?:\s+in\s+(\S+))?\s*$/.exec(text);
  if (!match) {
    throw new UsageError(
      `--window takes 'CRON for DURATION [in TIME-ZONE]', such as '0 22 * * 1-5 for 8h', got '${text}'`,
    );
  }
  const parsed = windowSchema.safeParse({
    cron: match[1],
    duration: match[2],
    ...(match[3] ? { timezone: match[3] } : {}),
  });
  if (!parsed.success) {
    throw new JobError(`--window '${text}': ${parsed.error.issues.map((issue) => issue.message).join('; ')}`);
  }
  return parsed.data;
}

/**
 * `replikit daemon <folder|job…> [--metrics-port N] [--window W]... [--store URL [--max-per-host N]
 * [--max-per-target N]]`: runs the jobs on their
 * schedules until SIGINT/SIGTERM, which stops a running run at a checkpoint (left unfinished; the
 * next start resumes it) and exits. An unfinished run of a job (the daemon was stopped or killed)
 * is resumed first. `--window` sets the maintenance windows of jobs without `options.windows`.
 * With `--store`, this process is one worker of a cluster; `--max-per-host`/`--max-per-target`
 * limit the runs at once per source host and per target across all its workers.
 * One line per event on stderr.
 */
export async function daemonCommand(
  context: CliContext,
  args: readonly string[],
  stateDir: string,
  options: {
    metricsPort?: string;
    windows?: readonly string[];
    store?: string;
    maxPerHost?: string;
    maxPerTarget?: string;
  } = {},
): Promise<number> {
  if (args.length === 0) throw new UsageError('daemon needs a folder of job files or at least one job file');
  const port = portOf(options.metricsPort);
  const perHost = limitOf(options.maxPerHost, '--max-per-host');
  const perTarget = limitOf(options.maxPerTarget, '--max-per-target');
  if ((perHost !== undefined || perTarget !== undefined) && options.store === undefined) {
    throw new UsageError(
      '--max-per-host and --max-per-target limit the runs of a cluster and need --store; the daemon without --store has no run limits yet (its jobs run at once)',
    );
  }
  const windows = options.windows?.map(windowOf);
  const jobs: JobSpec[] = [];
  for (const file of await jobFilesOf(args, context.cwd)) {
    const job = await loadJobForCli(file, context.cwd);
    const [missing] = await loadDriverPackages(job);
    if (missing !== undefined) {
      throw new NotFoundError(
        `the driver of kind '${missing}' (job '${job.name}') is not installed; install it with \`npm install ${driverPackageOf(missing)}\` beside @replikit/cli`,
      );
    }
    jobs.push(job);
  }
  if (options.store !== undefined) {
    if (port !== undefined)
      throw new UsageError(
        '--metrics-port is not served with --store yet: `replikit workers` shows each worker’s counters',
      );
    return (await import('./cluster-daemon.js')).clusterDaemon(context, jobs, stateDir, {
      store: options.store,
      ...(windows ? { windows } : {}),
      ...(perHost !== undefined || perTarget !== undefined
        ? {
            limits: {
              ...(perHost !== undefined ? { perHost } : {}),
              ...(perTarget !== undefined ? { perTarget } : {}),
            },
          }
        : {}),
    });
  }
  const engine = createEngine(stateDir, context.env);
  const daemon = new Daemon({ engine, jobs, ...(windows ? { windows } : {}) });
  const metrics = new DaemonMetrics(daemon);
  const log = (line: string) => context.stderr.write(`${new Date().toISOString()} ${line}\n`);
  daemon.on('run-start', (e) => log(`${e.job}: run starts (${e.reason}${e.runId ? ` ${e.runId}` : ''})`));
  daemon.on('run-end', (e) =>
    log(
      `${e.job}: run ${e.runId ? `${e.runId} ` : ''}${e.outcome} in ${formatDuration(e.durationSeconds * 1000)}${e.code ? `: ${e.code}${e.errorClass ? ` (${e.errorClass})` : ''} ${e.message}` : ''}${e.retryAt ? `; retry at ${e.retryAt}` : ''}`,
    ),
  );
  daemon.on('slot-missed', (e) => log(`${e.job}: ${e.count} slot(s) missed; RPO debt ${e.debt} slot(s)`));
  daemon.on('rpo', (e) =>
    log(
      `${e.job}: RPO ${e.from} → ${e.to}${e.achievedSeconds === undefined ? '' : ` (achieved ${formatDuration(e.achievedSeconds * 1000)}, target ${formatDuration((e.targetSeconds ?? 0) * 1000)})`}`,
    ),
  );
  daemon.on('held', (e) => log(`${e.job}: held until resumed: ${e.code} ${e.message}`));
  daemon.on('window', (e) =>
    log(
      e.open
        ? `${e.job}: maintenance window open${e.closesAt ? ` until ${e.closesAt}` : ''}`
        : `${e.job}: maintenance window closed; held until ${e.opensAt ?? 'no window opens again'}`,
    ),
  );
  daemon.on('control', (e) => log(`${e.job}: ${e.paused ? 'paused' : 'resumed'} (asked at ${e.requestedAt})`));
  daemon.on('error', (e) =>
    log(`${e.job}: scheduling failed, starting again in 30s: ${(e.error as Error).message ?? e.error}`),
  );
  const detach = attachProgressView(engine, { stream: context.stderr, tty: false, plainEverySeconds: 10 });
  const server = port === undefined ? undefined : await serveMetrics(metrics, port);
  try {
    const address = server?.address();
    if (address && typeof address === 'object') log(`metrics at http://127.0.0.1:${address.port}/metrics`);
    await daemon.start();
    log(`daemon started: ${jobs.map((job) => job.name).join(', ')}; state in ${stateDir}`);
    // Either signal stops running runs at a checkpoint (bin.ts aborts `stop` for the daemon).
    const stop = () => void daemon.stop();
    for (const signal of [context.signal, context.stop]) {
      if (signal?.aborted) stop();
      signal?.addEventListener('abort', stop, { once: true });
    }
    await daemon.done;
    log('daemon stopped');
    return 0;
  } finally {
    detach();
    await new Promise<void>((done) => (server ? server.close(() => done()) : done()));
    await engine.close();
  }
}
