// A worker of the cluster tests: `cluster-worker-child.ts <url> <jobs.json> <name> <ttlMs> <expireSeconds>`.
// Prints one JSON line per event: ready, scheduler (it took the scheduler lease), state, progress
// (of the transfer, at most every 200 ms), run-end (of the scheduler's daemon), drained.
import { readFile } from 'node:fs/promises';
import { ReplicationEngine, registerDriver } from '@replikit/core';
import { fileDriver } from '@replikit/driver-file';
import { localTransport } from '@replikit/transport';
import { ClusterWorker, PostgresStateStore } from '../../src/index.js';

const [url, jobsFile, name, ttl, expire] = process.argv.slice(2) as [string, string, string, string, string];
const say = (event: Record<string, unknown>) => process.stdout.write(`${JSON.stringify({ worker: name, ...event })}\n`);

registerDriver(fileDriver, { replace: true });
const jobs = JSON.parse(await readFile(jobsFile, 'utf8')) as unknown[];
const store = await PostgresStateStore.open({ connectionString: url });
const engine = new ReplicationEngine({ transport: localTransport(), stateStore: store, leaseTtlMs: Number(ttl) });
engine.on('state', (e) => say({ event: 'state', runId: e.runId, job: e.job, from: e.from, to: e.to }));
let lastProgress = 0;
engine.on('progress', (e) => {
  const now = Date.now();
  if (now - lastProgress < 200) return;
  lastProgress = now;
  say({ event: 'progress', runId: e.runId, job: e.job, bytesSent: e.stats.bytesSent });
});
const worker = await ClusterWorker.start({
  engine,
  store,
  jobs: jobs as never,
  name,
  leaseTtlMs: Number(ttl),
  queue: { expireInSeconds: Number(expire), retryDelaySeconds: 1, superviseIntervalSeconds: 1 },
  daemon: { requestPollMs: 0 },
  onRunEnd: (request, outcome) => {
    const error = outcome.error as { code?: string } | undefined;
    say({
      event: 'request-end',
      job: request.job.name,
      kind: request.kind,
      code: error?.code ?? outcome.record?.state,
    });
  },
});
let announced = false;
setInterval(() => {
  if (worker.isScheduler && !announced) {
    announced = true;
    say({ event: 'scheduler' });
    worker.scheduler?.on('run-end', (e) => say({ event: 'run-end', ...e }));
  }
  if (!worker.isScheduler) announced = false;
}, 50).unref();
say({ event: 'ready' });
process.once('SIGTERM', () => {
  void worker.stop().then(async () => {
    say({ event: 'drained' });
    await store.close();
    process.exit(0);
  });
});
setInterval(() => undefined, 1 << 30);
