// A worker of the run-limit tests: `limits-worker-child.ts <url> <name> <limits.json>`. Carries out
// run requests (no scheduled jobs) under the given run limits. Prints one JSON line per event:
// ready, waiting (a request waits for a run-limit slot), holding (a request's run holds its slots
// and has reached its transfer, so it is journaled; both seen within 50 ms), request-end, drained.
import { ReplicationEngine, registerDriver } from '@replikit/core';
import { fileDriver } from '@replikit/driver-file';
import { localTransport } from '@replikit/transport';
import { ClusterWorker, PostgresStateStore, type RunLimits } from '../../src/index.js';

const [url, name, limitsJson] = process.argv.slice(2) as [string, string, string];
const say = (event: Record<string, unknown>) => process.stdout.write(`${JSON.stringify({ worker: name, ...event })}\n`);

registerDriver(fileDriver, { replace: true });
const limits = JSON.parse(limitsJson) as RunLimits | null;
const store = await PostgresStateStore.open({ connectionString: url });
const engine = new ReplicationEngine({ transport: localTransport(), stateStore: store, leaseTtlMs: 5000 });
const worker = await ClusterWorker.start({
  engine,
  store,
  jobs: [],
  name,
  ...(limits ? { limits: { ...limits, pollMs: 200 } } : {}),
  queue: { expireInSeconds: 120, retryDelaySeconds: 1, superviseIntervalSeconds: 1 },
  daemon: { requestPollMs: 0 },
  onRunEnd: (request, outcome) => {
    const error = outcome.error as { code?: string } | undefined;
    say({ event: 'request-end', job: request.job.name, code: error?.code ?? outcome.record?.state });
  },
});
// Runs that reached their transfer: journaled by then (the stages before it saved), so resumable.
const transferring = new Set<string>();
engine.on('state', (e) => {
  if (e.to === 'transfer') transferring.add(e.runId);
});
const told = new Set<string>();
setInterval(() => {
  for (const run of worker.runs.running.values()) {
    if (run.waitingFor && !told.has(`w${run.requestId}`)) {
      told.add(`w${run.requestId}`);
      say({ event: 'waiting', job: run.job, for: run.waitingFor });
    }
    if (run.slots && run.runId && transferring.has(run.runId) && !told.has(`h${run.requestId}`)) {
      told.add(`h${run.requestId}`);
      say({ event: 'holding', job: run.job, runId: run.runId, slots: run.slots });
    }
  }
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
