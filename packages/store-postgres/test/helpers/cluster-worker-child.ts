// A worker of the cluster tests: `cluster-worker-child.ts <url> <jobs.json> <name> <ttlMs> <expireSeconds>`.
// Prints one JSON line per event: ready, scheduler (it took the scheduler lease), scheduler-lost
// (with why), state, progress (of the transfer, at most every 200 ms), run-end, held and
// daemon-error (of the scheduler's daemon), request-end, drained.
//
// For the chaos test it also prints every write made under a lease, so the test can prove the
// fencing rather than trust it: `lease` (a replica lease taken: replica, epoch), `write` (a fenced
// journal write — `saveRun`, `saveJob` — or a fenced target operation — `claim`, `commit`,
// `revert` — with its job, epoch, whether it was accepted, the error code when refused, and the
// times `t0` before and `t1` after the call, by this process's clock in ms) and `heartbeat`
// (a lease renewal, with the same fields). A line `arm` on stdin makes the worker stop itself
// (SIGSTOP) at the start of its next transfer (`arm transfer`) or just before its next commit on
// the target, after the engine's last lease check (`arm commit`), after printing `self-stop`: the
// test then holds it past its lease and wakes it to see its late writes refused.
import { readFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import {
  defineDriver,
  type ReplicationEngine as Engine,
  type Hypervisor,
  type LeaseOptions,
  type ReplicaLease,
  ReplicationEngine,
  registerDriver,
  type SaveRunOptions,
} from '@replikit/core';
import { fileDriver } from '@replikit/driver-file';
import { localTransport } from '@replikit/transport';
import { ClusterWorker, PostgresStateStore, SCHEDULER_LEASE } from '../../src/index.js';

const [url, jobsFile, name, ttl, expire] = process.argv.slice(2) as [string, string, string, string, string];
const say = (event: Record<string, unknown>) => process.stdout.write(`${JSON.stringify({ worker: name, ...event })}\n`);

/** The job of each run this worker has seen start (target operations name the run, not the job). */
const jobOfRun = new Map<string, string>();

/** Where the worker stops itself next (`arm transfer` or `arm commit` on stdin), if anywhere. */
let armed: 'transfer' | 'commit' | undefined;
/** The run entering its commit now (this worker runs one run at a time). */
let committing: { runId: string; job: string } | undefined;
createInterface({ input: process.stdin }).on('line', (line) => {
  const [word, where] = line.trim().split(' ');
  if (word === 'arm' && (where === 'transfer' || where === 'commit')) armed = where;
});

/**
 * Prints `self-stop` and stops this process (SIGSTOP) here, synchronously, inside the run: its
 * next writes are made after the test wakes it.
 */
function stopHere(runId: string, job: string, at: 'transfer' | 'commit'): void {
  armed = undefined;
  say({ event: 'self-stop', runId, job, at, t: Date.now() });
  process.kill(process.pid, 'SIGSTOP');
}

/** Runs `call` and prints a `kind` line with its outcome, its epoch and its start and end times. */
async function logged<T>(event: 'write' | 'heartbeat', fields: Record<string, unknown>, call: () => Promise<T>) {
  const t0 = Date.now();
  try {
    const result = await call();
    say({ event, ...fields, ok: true, t0, t1: Date.now() });
    return result;
  } catch (error) {
    const code = (error as { code?: string } | undefined)?.code ?? 'E_UNKNOWN';
    say({ event, ...fields, ok: false, code, t0, t1: Date.now() });
    throw error;
  }
}

/** The file driver, with its fenced operations (claim, commit, revert) printed. */
const instrumentedFileDriver = defineDriver({
  kind: fileDriver.kind,
  capabilities: fileDriver.capabilities,
  options: fileDriver.options,
  create: async (options, context) => {
    const driver = await fileDriver.create(options, context);
    const fenced = (op: string, replica: { name: string }, runId: string | undefined, epoch: number) => ({
      op,
      replica: replica.name,
      ...(runId === undefined ? {} : { runId, job: jobOfRun.get(runId) }),
      epoch,
    });
    type Fenced = { fence?: { epoch: number } } | undefined;
    return new Proxy(driver, {
      get(target, key) {
        const value = Reflect.get(target, key, target) as unknown;
        if (typeof value !== 'function') return value;
        const method = value.bind(target) as (...args: unknown[]) => Promise<unknown>;
        if (key === 'claimReplica') {
          return (replica: { name: string }, owner: { runId: string }, opts: Fenced) =>
            opts?.fence
              ? logged('write', fenced('claim', replica, owner.runId, opts.fence.epoch), () =>
                  method(replica, owner, opts),
                )
              : method(replica, owner, opts);
        }
        if (key === 'createRestorePoint' || key === 'revertTo') {
          return (replica: { name: string }, arg: unknown, opts: Fenced) => {
            if (key === 'createRestorePoint' && armed === 'commit' && committing) {
              // Stops after the engine's last lease check, just before the target's commit.
              stopHere(committing.runId, committing.job, 'commit');
            }
            return opts?.fence
              ? logged(
                  'write',
                  fenced(key === 'revertTo' ? 'revert' : 'commit', replica, undefined, opts.fence.epoch),
                  () => method(replica, arg, opts),
                )
              : method(replica, arg, opts);
          };
        }
        return method;
      },
    }) as Hypervisor;
  },
});
registerDriver(instrumentedFileDriver, { replace: true });

const jobs = JSON.parse(await readFile(jobsFile, 'utf8')) as unknown[];
const store = await PostgresStateStore.open({ connectionString: url });

// The store's fenced writes and its leases, printed.
const saveRun = store.saveRun.bind(store);
store.saveRun = (record, options: SaveRunOptions = {}) =>
  options.fence
    ? logged(
        'write',
        { op: 'saveRun', job: options.fence.replica, runId: record.runId, epoch: options.fence.epoch },
        () => saveRun(record, options),
      )
    : saveRun(record, options);
const saveJob = store.saveJob.bind(store);
store.saveJob = (record, options: SaveRunOptions = {}) =>
  options.fence
    ? logged('write', { op: 'saveJob', job: options.fence.replica, epoch: options.fence.epoch }, () =>
        saveJob(record, options),
      )
    : saveJob(record, options);
const leaseReplica = store.leaseReplica.bind(store);
store.leaseReplica = async (replica: string, options: LeaseOptions): Promise<ReplicaLease> => {
  const lease = await leaseReplica(replica, options);
  if (replica === SCHEDULER_LEASE) return lease;
  say({ event: 'lease', job: replica, epoch: lease.epoch, t: Date.now() });
  const heartbeat = lease.heartbeat.bind(lease);
  return Object.assign(Object.create(lease) as ReplicaLease, {
    heartbeat: () => logged('heartbeat', { job: replica, epoch: lease.epoch }, heartbeat),
    release: lease.release.bind(lease),
  });
};

const engine: Engine = new ReplicationEngine({
  transport: localTransport(),
  stateStore: store,
  leaseTtlMs: Number(ttl),
});
engine.on('state', (e) => {
  jobOfRun.set(e.runId, e.job);
  say({ event: 'state', runId: e.runId, job: e.job, from: e.from, to: e.to });
  committing = e.to === 'commit' ? { runId: e.runId, job: e.job } : undefined;
  if (e.to === 'transfer' && armed === 'transfer') stopHere(e.runId, e.job, 'transfer');
});
let lastProgress = 0;
engine.on('progress', (e) => {
  const now = Date.now();
  if (now - lastProgress < 200) return;
  lastProgress = now;
  say({ event: 'progress', runId: e.runId, job: e.job, bytesSent: e.stats.bytesSent });
});
/** This worker, once started (a request may end before `start` resolves). */
let current: ClusterWorker | undefined;
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
      requestId: request.requestId,
      // The run this request carried out (an error's details may name another run, the one in the way).
      runId: outcome.record?.runId ?? current?.runs.running.get(request.requestId)?.runId,
      code: error?.code ?? outcome.record?.state,
      t: Date.now(),
    });
  },
});
current = worker;
say({ event: 'ready' });
process.once('SIGTERM', () => {
  void worker.stop().then(async () => {
    say({ event: 'drained' });
    await store.close();
    process.exit(0);
  });
});
setInterval(() => undefined, 1 << 30);
