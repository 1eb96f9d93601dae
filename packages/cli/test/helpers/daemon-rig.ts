import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type DaemonEngine,
  DriverRegistry,
  type FakeClock,
  FileStateStore,
  type JobSpec,
  type JobSpecInput,
  ReplicationEngine,
} from '@replikit/core';
import { createFileDriver, fileDriver } from '@replikit/driver-file';
import { localTransport } from '@replikit/transport';
import { createRandomVm, digestOf } from './file-vm.js';

/** A folder with a file VM `guest` (one 1 MiB disk), a state store, and a real engine with the file driver. */
export interface DaemonRig {
  dir: string;
  store: FileStateStore;
  engine: ReplicationEngine;
  /** A job of the rig's VM with the given options. */
  job(name: string, options: Record<string, unknown>): JobSpecInput;
  /** True when the job's replica holds the same bytes as the source VM. */
  replicaEqualsSource(job: string): Promise<boolean>;
  close(): Promise<void>;
}

/** Builds a {@link DaemonRig} in a new temporary folder. */
export async function createDaemonRig(): Promise<DaemonRig> {
  const dir = await mkdtemp(join(tmpdir(), 'replikit-daemon-'));
  await createRandomVm(join(dir, 'vms'), 'guest', [{ id: 'disk0', size: 1024 * 1024 }], 0.5);
  const store = new FileStateStore(join(dir, '.replikit'));
  const engine = new ReplicationEngine({
    stateStore: store,
    drivers: new DriverRegistry().register(fileDriver),
    transport: localTransport(),
  });
  return {
    dir,
    store,
    engine,
    job: (name, options) => ({
      name,
      source: { driver: 'file', root: join(dir, 'vms'), vm: 'guest' },
      target: { driver: 'file', root: join(dir, 'replicas'), replicaName: `${name}-replica` },
      method: 'qhybrid',
      options,
    }),
    replicaEqualsSource: (job) => replicaEquals(join(dir, 'vms'), 'guest', join(dir, 'replicas'), `${job}-replica`),
    close: () => rm(dir, { recursive: true, force: true }),
  };
}

/** What {@link throttled} saw: each run's start and end on the fake clock, and the most at once. */
export interface RunLog {
  starts: number[];
  ends: number[];
  outcomes: string[];
  maxConcurrent: number;
}

/**
 * The engine, with each run made to last `durationMs` on the fake clock before the real run (the
 * file driver replicates for real; the time it takes is the clock's, so no test waits for it).
 */
export function throttled(engine: ReplicationEngine, clock: FakeClock, durationMs: number, log: RunLog): DaemonEngine {
  let running = 0;
  const around = async <T>(work: (signal?: AbortSignal) => Promise<T>, signal?: AbortSignal): Promise<T> => {
    running++;
    log.maxConcurrent = Math.max(log.maxConcurrent, running);
    log.starts.push(clock.now());
    try {
      if (durationMs > 0) await clock.sleepUntil(clock.now() + durationMs, signal);
      const result = await work(signal);
      log.outcomes.push('completed');
      return result;
    } catch (error) {
      log.outcomes.push((error as { code?: string }).code ?? 'error');
      throw error;
    } finally {
      running--;
      log.ends.push(clock.now());
    }
  };
  // The daemon stops a run through `suspend` (at a checkpoint): the clock's wait ends on it too.
  return {
    store: engine.store,
    run: (job: JobSpec, options) =>
      around(
        () => engine.run(job, options.suspend ? { suspend: options.suspend } : {}),
        options.signal ?? options.suspend,
      ),
    resume: (runId: string, options) =>
      around(
        () => engine.resume(runId, options.suspend ? { suspend: options.suspend } : {}),
        options.signal ?? options.suspend,
      ),
  };
}

/** A fresh {@link RunLog}. */
export function newRunLog(): RunLog {
  return { starts: [], ends: [], outcomes: [], maxConcurrent: 0 };
}

/**
 * Moves the fake clock from wait to wait until it passes `until`: each step waits (for the event,
 * never for time) until the daemon's one actor sleeps again, then wakes it.
 */
export async function driveUntil(clock: FakeClock, until: number): Promise<void> {
  for (;;) {
    await clock.whenSleeping(1);
    const next = clock.nextWake;
    if (next === undefined || next > until) return;
    clock.advanceToNext();
  }
}

/** True when replica `replicaName` under `targetRoot` holds the same bytes as file VM `vm` under `sourceRoot`. */
export async function replicaEquals(
  sourceRoot: string,
  vm: string,
  targetRoot: string,
  replicaName: string,
): Promise<boolean> {
  const source = createFileDriver({ root: sourceRoot });
  const target = createFileDriver({ root: targetRoot });
  try {
    const [info, replica] = [await source.getVM(vm), await target.getVM(replicaName)];
    const a = await Promise.all(info.disks.map((disk) => digestOf(source, disk)));
    const b = await Promise.all(replica.disks.map((disk) => digestOf(target, disk)));
    return JSON.stringify(a) === JSON.stringify(b);
  } finally {
    await source.close();
    await target.close();
  }
}
