// The chaos test of issue 21 (runs by default; REPLIKIT_CHAOS_SECONDS shortens it for local runs,
// default 180): 3 worker processes, 20 file-driver jobs every 2 s, guest writes on the sources, and
// a driver that every 2–5 s SIGKILLs and restarts a random worker or stops one inside a run (at
// its transfer, or just before its commit) until another worker took the run over past its lease.
// Afterwards, asserted from the journal and from every fenced write the workers print
// (helpers/cluster-worker-child.ts):
// - every replica equals its source's last replicated snapshot and is whole (ready, its
//   fingerprint the one the last commit recorded);
// - each run request made at most one run, each run came from a run request, no two runs of a job
//   overlapped, every slot got a run request or was counted missed, and every job ran after the chaos;
// - no two leases wrote one replica: an accepted write never follows an accepted write of a newer
//   epoch (journal and target), commits' epochs grow, `vm.json`'s fence epoch never goes down;
// - the stopped worker's late writes (made after it was woken, under the lease it held when it
//   stopped, once another worker had taken the run over) were all refused, and there were some.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { isReplikitError, ReplicationEngine, registerDriver } from '@replikit/core';
import { compareBytes, readWholeDisk, testPattern } from '@replikit/core/testing';
import { createFileDriver, createFileVM, fileDriver, openGuestDisk } from '@replikit/driver-file';
import { localTransport } from '@replikit/transport';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PostgresStateStore, RUN_QUEUE } from '../src/index.js';
import { startTestPostgres, type TestPostgres } from '../src/testing/index.js';

const seconds = Number(process.env.REPLIKIT_CHAOS_SECONDS ?? 180);
const MiB = 1024 * 1024;
const JOBS = 20;
const TTL_MS = 3000;
const EXPIRE_SECONDS = 5;
/** Upper bounds on waiting for an event, so a liveness failure fails the test instead of hanging it. */
const EVENT_CAP_MS = 60_000;

let server: TestPostgres;
let dir: string;
beforeAll(async () => {
  server = await startTestPostgres();
  dir = await mkdtemp(join(tmpdir(), 'replikit-chaos-'));
});
afterAll(async () => {
  await server?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** Seeded random numbers, so a failing round can be told by its seed. */
function random(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** One line a worker printed, with the process (spawn) that printed it. */
interface Line {
  proc: number;
  worker: string;
  event: string;
  [field: string]: unknown;
}

/** A fenced write or heartbeat a worker printed. */
interface Write extends Line {
  op?: string;
  job?: string;
  replica?: string;
  runId?: string;
  epoch: number;
  ok: boolean;
  code?: string;
  t0: number;
  t1: number;
}

/** A stop of a worker inside a run. */
interface Stop {
  proc: number;
  worker: string;
  /** Where it stopped: entering the transfer, or just before the target's commit. */
  at: 'transfer' | 'commit';
  job: string;
  runId: string;
  epoch: number;
  stopAt: number;
  contAt: number;
  takenOverBy: string;
}

/** The lines of every worker, and a way to wait for one. */
class Lines {
  readonly all: Line[] = [];
  private readonly waiters = new Set<() => void>();

  push(line: Line): void {
    this.all.push(line);
    for (const wake of this.waiters) wake();
  }

  /** Resolves with the first line from index `from` on that `match`es; rejects after EVENT_CAP_MS. */
  waitFor(from: number, what: string, match: (line: Line) => boolean): Promise<Line> {
    return new Promise((resolve, reject) => {
      let i = from;
      const check = () => {
        for (; i < this.all.length; i++) {
          if (match(this.all[i]!)) {
            done();
            resolve(this.all[i]!);
            return;
          }
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`chaos: no ${what} within ${EVENT_CAP_MS} ms`));
      }, EVENT_CAP_MS);
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
      check();
    });
  }

  writes(): Write[] {
    return this.all.filter((l): l is Write => l.event === 'write');
  }
}

/**
 * Accepted writes that follow an accepted write of a newer epoch on the same key (started after it
 * ended): two lease holders writing one replica. Empty when the fencing held.
 */
function interleaved(writes: Write[], key: (w: Write) => string | undefined): string[] {
  const found: string[] = [];
  const byKey = new Map<string, Write[]>();
  for (const w of writes) {
    const k = key(w);
    if (!w.ok || k === undefined) continue;
    byKey.set(k, [...(byKey.get(k) ?? []), w]);
  }
  for (const [k, list] of byKey) {
    for (const late of list) {
      const newer = list.find((w) => w.epoch > late.epoch && w.t1 < late.t0);
      if (newer) {
        found.push(
          `${k}: ${late.worker} ${late.op} under epoch ${late.epoch} accepted after ${newer.worker} ${newer.op} under epoch ${newer.epoch}`,
        );
      }
    }
  }
  return found;
}

describe('chaos: 3 workers, 20 jobs, kills and stops', () => {
  it(
    'every replica equals its source; no run lost or twice; no two leases wrote a replica; late writes refused',
    async () => {
      const began = Date.now();
      const seed = Number(process.env.REPLIKIT_CHAOS_SEED ?? Date.now() % 1_000_000);
      const rand = random(seed);
      const url = await server.createDatabase();
      const vms = join(dir, 'vms');
      const replicas = join(dir, 'replicas');
      const names = Array.from({ length: JOBS }, (_, i) => `c${i}`);
      for (const name of names) await createFileVM(vms, { name, disks: [{ id: 'system', size: 2 * MiB }] });
      const jobs = names.map((name) => ({
        name,
        source: { driver: 'file', root: vms, vm: name, reflink: false },
        target: { driver: 'file', root: replicas, reflink: false },
        method: 'qhybrid',
        options: { schedule: '*/2 * * * * *' },
      }));
      const jobsFile = join(dir, 'jobs.json');
      await writeFile(jobsFile, JSON.stringify(jobs));
      const lines = new Lines();
      let procs = 0;
      const start = (name: string): ChildProcess => {
        const proc = ++procs;
        const child = spawn(
          process.execPath,
          [
            '--conditions=@replikit/source',
            '--import',
            'tsx',
            fileURLToPath(new URL('./helpers/cluster-worker-child.ts', import.meta.url)),
            // Its sessions carry its name, so the test can cut the one holding its job lock.
            `${url}&application_name=chaos-${name}`,
            jobsFile,
            name,
            String(TTL_MS),
            String(EXPIRE_SECONDS),
          ],
          { stdio: ['pipe', 'pipe', 'ignore'] },
        );
        child.stdin!.on('error', () => undefined);
        createInterface({ input: child.stdout! }).on('line', (text) => {
          try {
            lines.push({ proc, seen: Date.now(), ...(JSON.parse(text) as { worker: string; event: string }) });
          } catch {
            // Not an event line.
          }
        });
        procOf.set(child, proc);
        return child;
      };
      const procOf = new Map<ChildProcess, number>();
      const workers = new Map<string, ChildProcess>(['w1', 'w2', 'w3'].map((n) => [n, start(n)]));
      const store = await PostgresStateStore.open({ connectionString: url });
      const fenceSamples = new Map<string, number[]>();
      /** Every replica's `vm.json` fence epoch, by replica name, sampled now and then. */
      const sampleFences = async () => {
        for (const folder of await readdir(replicas).catch(() => [])) {
          const text = await readFile(join(replicas, folder, 'vm.json'), 'utf8').catch(() => undefined);
          if (!text) continue;
          const vm = JSON.parse(text) as { name: string; replica?: { fenceEpoch?: number } };
          const epoch = vm.replica?.fenceEpoch;
          if (epoch !== undefined) fenceSamples.set(vm.name, [...(fenceSamples.get(vm.name) ?? []), epoch]);
        }
      };
      const stops: Stop[] = [];
      let kills = 0;
      const chaosAt = Date.now();
      const until = chaosAt + seconds * 1000;
      let drainAt = 0;
      let quiesceAt = 0;
      try {
        /**
         * Stops `victim` at the start of its next transfer, or just before its next commit on the
         * target (after the engine's last lease check), until another worker took its run over.
         */
        const stopInsideRun = async (victim: string, at: 'transfer' | 'commit') => {
          const child = workers.get(victim)!;
          const proc = procOf.get(child)!;
          const from = lines.all.length;
          child.stdin!.write(`arm ${at}\n`);
          const stopped = await lines.waitFor(
            from,
            `self-stop of ${victim}`,
            (l) => l.proc === proc && l.event === 'self-stop',
          );
          const stopAt = Date.now();
          const runId = stopped.runId as string;
          const job = stopped.job as string;
          const lease = lines.all.findLast((l) => l.proc === proc && l.event === 'lease' && l.job === job)!;
          const epoch = lease.epoch as number;
          // A SIGSTOPped process keeps its connections, so its job lock (a session's advisory
          // lock) would never end and no worker could take the run over: cut that session, as
          // a network partition would.
          await store.query(
            `SELECT pg_terminate_backend(a.pid) FROM pg_stat_activity a
             WHERE a.application_name = $1 AND EXISTS (
               SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory' AND l.granted)`,
            [`chaos-${victim}`],
          );
          const takeover = await lines.waitFor(
            from,
            `takeover of ${job} (run ${runId}) from stopped ${victim}`,
            (l) =>
              l.proc !== proc &&
              l.event === 'write' &&
              l.op === 'claim' &&
              l.ok === true &&
              l.runId === runId &&
              (l.epoch as number) > epoch,
          );
          if (at === 'commit') {
            // Woken once the new holder's own commit is done, so the late commit finds the replica's
            // locks free and meets the fence (not the new holder's lock: that refusal is E_CONFLICT).
            const replica = lines.all.findLast(
              (l) => l.proc === proc && l.event === 'write' && l.op === 'claim' && l.runId === runId,
            )?.replica;
            await lines.waitFor(
              from,
              `the new holder's commit of ${job} (run ${runId})`,
              (l) =>
                l.proc !== proc &&
                l.event === 'write' &&
                l.op === 'commit' &&
                l.ok === true &&
                l.replica === replica &&
                (l.epoch as number) > epoch,
            );
          }
          const contAt = Date.now();
          child.kill('SIGCONT');
          stops.push({ proc, worker: victim, at, job, runId, epoch, stopAt, contAt, takenOverBy: takeover.worker });
          // Its run ends once it finds its lease lost; what it tried meanwhile is judged at the end.
          await lines.waitFor(
            from,
            `end of the stopped ${victim}'s request`,
            (l) => l.proc === proc && l.event === 'request-end' && (l.t as number) >= contAt,
          );
        };
        while (Date.now() < until) {
          await new Promise((resolve) => setTimeout(resolve, 2000 + rand() * 3000));
          // Guest writes on a few sources (a source being snapshotted is skipped this time).
          for (let i = 0; i < 3; i++) {
            const name = names[Math.floor(rand() * names.length)]!;
            const guest = await openGuestDisk(vms, name, 'system').catch((error: unknown) => {
              if (isReplikitError(error, 'E_CONFLICT')) return undefined;
              throw error;
            });
            if (!guest) continue;
            await guest.write(Math.floor(rand() * 30) * 64 * 1024, testPattern(Math.floor(rand() * 1e6), 64 * 1024));
            await guest.close();
          }
          await sampleFences();
          const victim = `w${1 + Math.floor(rand() * 3)}`;
          // A stop now and then, alternately entering a transfer and before a commit; surely one of
          // each, the first in the first third of the round and the second in the second.
          const elapsed = (Date.now() - chaosAt) / (seconds * 1000);
          if (rand() < 0.2 || (stops.length === 0 && elapsed > 1 / 3) || (stops.length === 1 && elapsed > 2 / 3)) {
            await stopInsideRun(victim, stops.length % 2 === 0 ? 'transfer' : 'commit');
          } else {
            workers.get(victim)!.kill('SIGKILL');
            kills++;
            workers.set(victim, start(victim));
          }
        }
        // Quiesce: no more guest writes or chaos; wait until every job completed a run started after.
        quiesceAt = Date.now();
        const from = lines.all.length;
        for (const name of names) {
          const started = await lines.waitFor(
            from,
            `run of ${name} started after the chaos`,
            (l) => l.event === 'state' && l.job === name && l.from === 'created',
          );
          await lines.waitFor(
            from,
            `completion of ${name}'s run ${started.runId as string}`,
            (l) => l.event === 'request-end' && l.runId === started.runId && l.code === 'completed',
          );
        }
      } finally {
        drainAt = Date.now();
        const exited = [...workers.values()].map(
          (child) =>
            new Promise((resolve) => (child.exitCode !== null ? resolve(undefined) : child.once('exit', resolve))),
        );
        for (const child of workers.values()) child.kill('SIGCONT');
        for (const child of workers.values()) child.kill('SIGTERM');
        const timer = setTimeout(() => {
          for (const child of workers.values()) if (child.exitCode === null) child.kill('SIGKILL');
        }, 15_000);
        await Promise.all(exited);
        clearTimeout(timer);
      }
      const drainedAt = Date.now();
      // The workers are gone: the last fence epochs, before the finisher below takes its own leases.
      await sampleFences();
      try {
        // The drain left the runs it stopped unfinished (resumable by any worker): finish them here.
        registerDriver(fileDriver, { replace: true });
        const finisher = new ReplicationEngine({ transport: localTransport(), stateStore: store });
        let finished = 0;
        for (const name of names) {
          const open = await store.findUnfinished(name);
          if (!open) continue;
          expect((await finisher.resume(open.runId)).state, name).toBe('completed');
          finished++;
        }
        const runs = await store.listRuns();
        const writes = lines.writes();
        const heartbeats = lines.all.filter((l): l is Write => l.event === 'heartbeat');
        const refused = writes.filter((w) => !w.ok);
        const refusedBy = (op: string) => refused.filter((w) => w.op === op).length;

        // Late writes: made by a stopped worker after it was woken, under a lease it held before.
        const late = stops.flatMap((stop) => {
          const before = new Set(
            lines.all
              .filter((l) => l.proc === stop.proc && l.event === 'lease' && (l.t as number) < stop.stopAt)
              .map((l) => l.epoch as number),
          );
          return writes.filter((w) => w.proc === stop.proc && w.t0 >= stop.contAt && before.has(w.epoch));
        });
        const lateHeartbeats = stops.flatMap((stop) =>
          heartbeats.filter((h) => h.proc === stop.proc && h.t0 >= stop.contAt && h.epoch <= stop.epoch),
        );
        const lateAccepted = late.filter((w) => w.ok);
        // A stopped worker that was the scheduler: what its daemon did after waking, before it saw
        // that it had lost the scheduler lease (shown, not asserted: schedule states are not fenced).
        const schedulerStops = stops.map((stop) => {
          const own = lines.all.filter((l) => l.proc === stop.proc);
          const last = own.findLast(
            (l) => (l.event === 'scheduler' || l.event === 'scheduler-lost') && (l.seen as number) < stop.stopAt,
          );
          if (last?.event !== 'scheduler') return undefined;
          const lost = own.find((l) => l.event === 'scheduler-lost' && (l.seen as number) >= stop.contAt);
          const acted = own.filter(
            (l) =>
              (l.event === 'run-end' || l.event === 'held' || l.event === 'daemon-error') &&
              (l.seen as number) >= stop.contAt &&
              (!lost || (l.seen as number) <= (lost.seen as number)),
          );
          return `${stop.worker} was the scheduler; after waking its daemon reported ${acted.length} events before it gave up the lease (${lost?.reason ?? 'never'})`;
        });

        // Each run request made at most one run (from the workers' answers), and each run came from
        // exactly one run request (from the journal's request table).
        const runsOfRequest = new Map<string, Set<string>>();
        for (const l of lines.all) {
          if (l.event !== 'request-end' || l.kind !== 'run' || typeof l.runId !== 'string') continue;
          const id = l.requestId as string;
          runsOfRequest.set(id, (runsOfRequest.get(id) ?? new Set()).add(l.runId));
        }
        const requestTwice = [...runsOfRequest].filter(([, set]) => set.size > 1).map(([id]) => id);
        // A run with no run request was started behind the scheduler's back (lost track of).
        const noRequest = await store.query<{ run_id: string }>(
          `SELECT r.run_id FROM replikit.runs r WHERE NOT EXISTS (
             SELECT 1 FROM replikit.run_requests q WHERE q.run_id = r.run_id AND q.kind = 'run')`,
          [],
        );
        // A new scheduler sends a run request for its first slot while the stopped or dead one's run
        // is unfinished; the worker resumes that run rather than start another: one run, two requests.
        const adopted = await store.query<{ run_id: string }>(
          `SELECT run_id FROM replikit.run_requests WHERE kind = 'run' AND run_id IS NOT NULL
           GROUP BY run_id HAVING count(*) > 1`,
          [],
        );
        const schedules = await store.listSchedules();
        // Slot accounting: every slot from a job's first to its last handled one either got a run
        // request (sent to the queue, whether a worker took it before the drain or not), was counted
        // missed (overlap, catch-up) in its schedule state, or is its state's due run (decided, not
        // yet started: the next scheduler starts it).
        const firstRequests = await store.query<{ job: string; first: Date; requests: string; taken: string }>(
          `SELECT sent.data->'job'->>'name' AS job, min(sent.created_on) AS first, count(*) AS requests,
             count(r.request_id) AS taken
           FROM (SELECT id, created_on, data FROM replikit_queue.job WHERE name = $1
                 UNION ALL SELECT id, created_on, data FROM replikit_queue.archive WHERE name = $1) AS sent
           LEFT JOIN replikit.run_requests r ON r.request_id = sent.id::text
           WHERE sent.data->>'kind' = 'run' GROUP BY 1`,
          [RUN_QUEUE],
        );
        const requestsWithoutRun = await store.query<{ n: string }>(
          `SELECT count(*) AS n FROM replikit.run_requests WHERE kind = 'run' AND run_id IS NULL`,
          [],
        );
        const slotsLost: string[] = [];
        let slotsExtra = 0;
        for (const name of names) {
          const schedule = schedules.find((st) => st.job === name);
          const row = firstRequests.rows.find((r) => r.job === name);
          if (!schedule?.lastSlot || !row) {
            slotsLost.push(`${name}: no slot handled`);
            continue;
          }
          const slots = (Date.parse(schedule.lastSlot) - Math.floor(row.first.getTime() / 2000) * 2000) / 2000 + 1;
          const due = schedule.due ? 1 : 0;
          const handled = Number(row.requests) + schedule.missedTotal + due;
          if (handled < slots)
            slotsLost.push(
              `${name}: ${slots} slots, ${row.requests} run requests (${row.taken} taken) + ${schedule.missedTotal} missed + ${due} due`,
            );
          slotsExtra += Math.max(0, handled - slots);
        }
        const commits = writes.filter((w) => w.op === 'commit' && w.ok).sort((a, b) => a.t1 - b.t1);
        const commitsOutOfOrder: string[] = [];
        for (const name of names) {
          const own = commits.filter((w) => w.replica === name);
          for (let i = 1; i < own.length; i++) {
            if (own[i]!.epoch <= own[i - 1]!.epoch) {
              commitsOutOfOrder.push(`${name}: epoch ${own[i]!.epoch} committed after epoch ${own[i - 1]!.epoch}`);
            }
          }
        }
        const journalOps = new Set(['saveRun', 'saveJob']);
        const targetOps = new Set(['claim', 'commit', 'revert']);
        const journalInterleaved = interleaved([...writes, ...heartbeats], (w) =>
          w.event === 'heartbeat' || journalOps.has(w.op ?? '') ? w.job : undefined,
        );
        const targetInterleaved = interleaved(writes, (w) => (targetOps.has(w.op ?? '') ? w.replica : undefined));

        console.log(
          [
            `phases: start ${((chaosAt - began) / 1000).toFixed(1)} s, chaos ${((quiesceAt - chaosAt) / 1000).toFixed(1)} s, quiesce ${((drainAt - quiesceAt) / 1000).toFixed(1)} s, drain ${((drainedAt - drainAt) / 1000).toFixed(1)} s, finish and checks ${((Date.now() - drainedAt) / 1000).toFixed(1)} s`,
            `chaos seed ${seed}: ${seconds} s, ${kills} kills, ${stops.length} stops inside a run; ${runs.length} runs (${runs.filter((r) => r.state === 'completed').length} completed)`,
            `fenced writes: ${writes.length}, refused ${refused.length} (saveRun ${refusedBy('saveRun')}, saveJob ${refusedBy('saveJob')}, claim ${refusedBy('claim')}, commit ${refusedBy('commit')}, revert ${refusedBy('revert')}); heartbeats refused ${heartbeats.filter((h) => !h.ok).length}`,
            `late writes of stopped workers: ${late.length}, refused ${late.length - lateAccepted.length}, accepted ${lateAccepted.length} (${late.map((w) => `${w.op}:${w.ok ? 'ACCEPTED' : w.code}`).join(', ')}); late heartbeats ${lateHeartbeats.length}, refused ${lateHeartbeats.filter((h) => !h.ok).length}`,
            ...stops.map(
              (s) =>
                `  stop: ${s.worker} at ${s.at} in run ${s.runId} of ${s.job} (epoch ${s.epoch}), stopped ${s.contAt - s.stopAt} ms, taken over by ${s.takenOverBy}`,
            ),
            ...schedulerStops.filter((x) => x !== undefined).map((x) => `  ${x}`),
            `runs the drain left unfinished, finished after it: ${finished}`,
            `vm.json fence epochs sampled: ${[...fenceSamples.values()].reduce((n, list) => n + list.length, 0)} over ${fenceSamples.size} replicas`,
            `slots: ${schedules.reduce((n, st) => n + st.missedTotal, 0)} counted missed (overlap, catch-up), ${slotsLost.length} jobs with a slot neither run nor counted; ${slotsExtra} more run requests + missed than slots (retries, a new scheduler's first slot, and slots before a job's first request was sent, which this count starts from); ${requestsWithoutRun.rows[0]?.n} run requests that started no run`,
            `runs from no run request: ${noRequest.rows.length}; run requests with two runs: ${requestTwice.length}; runs a second run request adopted (resumed, not started again): ${adopted.rows.length}`,
          ].join('\n'),
        );

        // At no moment did two lease holders write one replica.
        expect(journalInterleaved).toEqual([]);
        expect(targetInterleaved).toEqual([]);
        expect(commitsOutOfOrder).toEqual([]);
        expect(fenceSamples.size).toBe(JOBS);
        for (const [name, samples] of fenceSamples) {
          for (let i = 1; i < samples.length; i++) expect(samples[i]!, name).toBeGreaterThanOrEqual(samples[i - 1]!);
          const highest = Math.max(
            ...writes.filter((w) => w.ok && w.replica === name && targetOps.has(w.op ?? '')).map((w) => w.epoch),
          );
          expect(samples.at(-1), name).toBe(highest);
        }
        // The stopped workers' late writes were all refused, and there were some.
        expect(stops.length).toBeGreaterThan(0);
        expect(late.length).toBeGreaterThan(0);
        expect(lateAccepted).toEqual([]);
        // Refused by the fence (E_LEASE_LOST), or, for a late commit, by the new holder's replica
        // lock met first (E_CONFLICT): either way nothing was written.
        for (const w of late) expect(['E_LEASE_LOST', 'E_CONFLICT'], `${w.op} of ${w.worker}`).toContain(w.code);
        expect(lateHeartbeats.filter((h) => h.ok)).toEqual([]);
        // A worker stopped just before its commit tried that commit late (refused, as every late write).
        expect(stops.filter((stop) => stop.at === 'commit').length).toBeGreaterThan(0);
        for (const stop of stops.filter((x) => x.at === 'commit')) {
          expect(
            late.filter((w) => w.proc === stop.proc && w.op === 'commit' && w.t0 >= stop.contAt).length,
            `late commits of ${stop.worker} in run ${stop.runId}`,
          ).toBeGreaterThan(0);
        }

        // No run lost or run twice.
        expect(requestTwice).toEqual([]);
        expect(noRequest.rows).toEqual([]);
        expect(slotsLost).toEqual([]);
        for (const name of names) {
          const own = runs
            .filter((r) => r.job.name === name)
            .map((r) => [Date.parse(r.startedAt), Date.parse(r.finishedAt ?? r.updatedAt)] as const)
            .sort((a, b) => a[0] - b[0]);
          for (let i = 1; i < own.length; i++) expect(own[i]![0], name).toBeGreaterThanOrEqual(own[i - 1]![1]);
          const schedule = schedules.find((s) => s.job === name);
          expect(schedule?.lastSlot, name).toBeDefined();
          expect(Date.parse(schedule!.lastSlot!), name).toBeGreaterThanOrEqual(quiesceAt - 2000);
        }

        // Every replica equals its source's last replicated snapshot, and is whole.
        const source = createFileDriver({ root: vms, reflink: false });
        const target = createFileDriver({ root: replicas, reflink: false });
        for (const name of names) {
          const record = await store.loadJob(name);
          expect(record?.baseSnapshot, name).toBeDefined();
          expect(record?.replica, name).toBeDefined();
          const replica = record!.replica!;
          const base = record!.baseSnapshot!.disks[0]!;
          expect(
            compareBytes(await readWholeDisk(target, replica.disks[0]!), await readWholeDisk(source, base)),
            name,
          ).toBe('equal');
          expect(await target.replicaMark(replica), name).toBe('ready');
          expect((await target.replicaState(replica)).value, name).toBe(record!.replicaFingerprint);
        }
      } finally {
        await store.close();
      }
    },
    (seconds + 90) * 1000,
  );
});
