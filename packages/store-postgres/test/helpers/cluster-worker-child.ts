// A worker of the cluster tests: `cluster-worker-child.ts <url> <jobs.json> <name> <ttlMs> <expireSeconds>`.
// Prints one JSON line per event: ready, scheduler (it took the scheduler lease), scheduler-lost
// (with why), state, progress (of the transfer, at most every 200 ms), run-end, held and
// daemon-error (of the scheduler's daemon), request-end, drained.
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
  onSchedulerChange: (change) => {
    if (!change.scheduling) return say({ event: 'scheduler-lost', reason: change.reason, epoch: change.epoch });
    // Told before the daemon starts: no event of it is missed.
    say({ event: 'scheduler', epoch: change.epoch });
    change.daemon?.on('run-end', (e) => say({ event: 'run-end', ...e }));
    change.daemon?.on('held', (e) => say({ event: 'held', ...e }));
    change.daemon?.on('error', (e) =>
      say({ event: 'daemon-error', job: e.job, message: e.error instanceof Error ? e.error.message : String(e.error) }),
    );
  },
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
say({ event: 'ready' });
process.once('SIGTERM', () => {
  void worker.stop().then(async () => {
    say({ event: 'drained' });
    await store.close();
    process.exit(0);
  });
});
setInterval(() => undefined, 1 << 30);
