import { formatDuration, type JobSpec, type WindowOption } from '@replikit/core';
import { ClusterWorker, PostgresStateStore, type RunLimits } from '@replikit/store-postgres';
import type { CliContext } from '../context.js';
import { createEngine } from '../create-engine.js';
import { attachProgressView } from '../output/progress-view.js';

/**
 * `replikit daemon <jobs> --store postgres://…`: this process is one worker of a cluster that
 * shares the PostgreSQL store: it carries out the runs the queue gives it and, while it holds the
 * scheduler lease, schedules every job. SIGINT/SIGTERM drain it: its running runs stop at a
 * checkpoint (another worker resumes them), the scheduler lease is released. One line per event
 * on stderr. The replication caches and the block store stay in `stateDir` on this machine.
 */
export async function clusterDaemon(
  context: CliContext,
  jobs: JobSpec[],
  stateDir: string,
  options: { store: string; windows?: readonly WindowOption[]; limits?: RunLimits },
): Promise<number> {
  const store = await PostgresStateStore.open({ connectionString: options.store });
  const engine = createEngine(stateDir, context.env, store);
  const log = (line: string) => context.stderr.write(`${new Date().toISOString()} ${line}\n`);
  const detach = attachProgressView(engine, { stream: context.stderr, tty: false, plainEverySeconds: 10 });
  let worker: ClusterWorker | undefined;
  try {
    worker = await ClusterWorker.start({
      engine,
      store,
      jobs,
      ...(options.windows ? { daemon: { windows: options.windows } } : {}),
      ...(options.limits ? { limits: options.limits } : {}),
      // Told before the scheduler's daemon starts, so none of its events is missed.
      onSchedulerChange: (change) => {
        if (!change.scheduling) {
          log(`this worker no longer schedules (${change.reason ?? 'stopped'})`);
          return;
        }
        log('this worker schedules the jobs now');
        const daemon = change.daemon;
        daemon?.on('run-end', (e) =>
          log(
            `${e.job}: run ${e.runId ? `${e.runId} ` : ''}${e.outcome} in ${formatDuration(e.durationSeconds * 1000)}${e.code ? `: ${e.code} ${e.message}` : ''}${e.retryAt ? `; retry at ${e.retryAt}` : ''}`,
          ),
        );
        daemon?.on('held', (e) => log(`${e.job}: held until resumed: ${e.code} ${e.message}`));
        daemon?.on('error', (e) =>
          log(`${e.job}: scheduling failed, starting again in 30s: ${(e.error as Error).message ?? e.error}`),
        );
      },
    });
    log(`worker ${worker.name} started on ${store.location}: ${jobs.map((job) => job.name).join(', ')}`);
    if (options.limits) log(`run limits across the workers: ${describeLimits(options.limits)}`);
    await new Promise<void>((resolve) => {
      for (const signal of [context.signal, context.stop]) {
        if (signal?.aborted) resolve();
        signal?.addEventListener('abort', () => resolve(), { once: true });
      }
    });
    log('draining: running runs stop at a checkpoint; another worker resumes them');
    await worker.stop();
    log('worker stopped');
    return 0;
  } finally {
    detach();
    await worker?.stop().catch(() => undefined);
    await engine.close();
    await store.close();
  }
}

/** `at most 2 runs at once per source host, 1 per target`. */
function describeLimits(limits: RunLimits): string {
  const parts = [
    ...(limits.perHost !== undefined ? [`${limits.perHost} per source host`] : []),
    ...(limits.perTarget !== undefined ? [`${limits.perTarget} per target`] : []),
  ];
  return `at most ${parts.join(', ')} at once`;
}
