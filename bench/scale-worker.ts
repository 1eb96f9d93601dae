// One worker process of the scale benchmark: `scale-worker.ts <url> <jobs.json> <name> <concurrency>`.
// A `ClusterWorker` on the PostgreSQL store with the file driver. Prints JSON lines: `ready`, then
// every 500 ms `tick` with the runs it completed and failed and the time its PostgreSQL queries
// took so far (per connection kind, see pg-timing.ts); SIGTERM drains it (`drained`).
import { readFile } from 'node:fs/promises';
import { ReplicationEngine, registerDriver } from '@replikit/core';
import { fileDriver } from '@replikit/driver-file';
import { ClusterWorker, PostgresStateStore } from '@replikit/store-postgres';
import { localTransport } from '@replikit/transport';
import { timePgQueries } from './pg-timing.js';

const [url, jobsFile, name, concurrency] = process.argv.slice(2) as [string, string, string, string];
const say = (event: Record<string, unknown>) => process.stdout.write(`${JSON.stringify({ worker: name, ...event })}\n`);

const pgTimes = timePgQueries();
registerDriver(fileDriver, { replace: true });
const jobs = JSON.parse(await readFile(jobsFile, 'utf8')) as unknown[];
const store = await PostgresStateStore.open({ connectionString: url });
const engine = new ReplicationEngine({ transport: localTransport(), stateStore: store });
let done = 0;
let failed = 0;
const worker = await ClusterWorker.start({
  engine,
  store,
  jobs: jobs as never,
  name,
  concurrency: Number(concurrency),
  daemon: { requestPollMs: 0 },
  onRunEnd: (_request, outcome) => {
    if (outcome.record?.state === 'completed') done++;
    else failed++;
  },
});
const tick = () => say({ event: 'tick', at: Date.now(), done, failed, pg: pgTimes, scheduler: worker.isScheduler });
setInterval(tick, 500).unref();
say({ event: 'ready' });
process.once('SIGTERM', () => {
  void worker.stop().then(async () => {
    tick();
    say({ event: 'drained' });
    await engine.close();
    await store.close();
    process.exit(0);
  });
});
setInterval(() => undefined, 1 << 30);
