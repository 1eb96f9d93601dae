import { mkdtemp, rm } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { localTransport } from '@replikit/transport';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  DriverError,
  DriverRegistry,
  FileStateStore,
  isReplikitError,
  type JobSpecInput,
  type ProgressEvent,
  ReplicationEngine,
  type RunRecord,
  toJournal,
} from '../src/index.js';
import { assertTransition, createNodeHasher } from '../src/internal/index.js';
import { instanceDriver } from './helpers/instance-driver.js';
import { createMemoryDriver, type MemoryDriver } from './helpers/memory-driver.js';

const MiB = 1024 * 1024;
let dir: string;
let source: MemoryDriver;
let target: MemoryDriver;
let registry: DriverRegistry;

function job(overrides: Partial<JobSpecInput> = {}): JobSpecInput {
  return {
    name: 'unit',
    source: { driver: 'memsrc', vm: 'vm1' },
    target: { driver: 'memdst' },
    method: 'qhybrid',
    blockSize: 65536,
    ...overrides,
  };
}

function engine(extra: Partial<ConstructorParameters<typeof ReplicationEngine>[0]> = {}) {
  return new ReplicationEngine({
    stateStore: new FileStateStore(join(dir, 'state')),
    drivers: registry,
    ...extra,
    transport: extra.transport ?? localTransport(),
  });
}

function fill(data: Uint8Array, seed: number, from = 0, to = data.length) {
  let x = seed;
  for (let i = from; i < to; i++) {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    data[i] = x >>> 16;
  }
}

function same(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.compare(a, b) === 0;
}

function replicaDisk(id: string) {
  const vm = target.vms.get('vm1-replica')!;
  return vm.disks.get(id)!;
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'replikit-engine-'));
  source = createMemoryDriver({ changeTracking: true });
  target = createMemoryDriver();
  registry = new DriverRegistry()
    .register(instanceDriver('memsrc', () => source))
    .register(instanceDriver('memdst', () => target));
  const vm = source.addVm('vm1', [
    { id: 'a', size: 4 * MiB },
    { id: 'b', size: 2 * MiB + 12345 },
  ]);
  const a = source.vms.get(vm.id)!.disks.get('a')!;
  const b = source.vms.get(vm.id)!.disks.get('b')!;
  fill(a, 1, 0, MiB); // first MiB data, rest zero
  fill(b, 2, MiB, b.length); // tail data, odd size
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('ReplicationEngine', () => {
  it('refuses to be built without a transport, with one E_INPUT line naming the in-process one', () => {
    const build = () =>
      new ReplicationEngine({ stateStore: new FileStateStore(join(dir, 'state')), drivers: registry } as never);
    expect(build).toThrow(expect.objectContaining({ code: 'E_INPUT' }));
    expect(build).toThrow(/localTransport\(\).*@replikit\/transport/);
    expect(() => build()).not.toThrow(/\n/);
  });

  it('replicates in full, then sends only the changed blocks, and the replica equals the source', async () => {
    const e = engine();
    const first = await e.run(job());
    expect(first.state).toBe('completed');
    expect(first.disks.map((d) => d.mode)).toEqual(['full', 'full']);
    expect(same(replicaDisk('a'), source.vms.get('vm1')!.disks.get('a')!)).toBe(true);
    expect(same(replicaDisk('b'), source.vms.get('vm1')!.disks.get('b')!)).toBe(true);
    // holes of a new replica are not sent at all
    expect(first.stats.bytesSent).toBeLessThan(2.5 * MiB);

    const a = source.vms.get('vm1')!.disks.get('a')!;
    a.fill(7, 3 * MiB, 3 * MiB + 10); // one block changed in a zero region
    a.fill(0, 0, 65536); // one block zeroed
    const second = await e.run(job());
    expect(second.disks.map((d) => d.mode)).toEqual(['tracked', 'tracked']);
    expect(second.stats.blocksChanged).toBe(1);
    expect(second.stats.blocksZero).toBe(1);
    expect(same(replicaDisk('a'), a)).toBe(true);
    // the first run's snapshot is gone, the second is kept as base
    expect([...source.snapshots.values()].map((s) => s.snapshot.id)).toEqual([second.snapshot!.id]);
  });

  it('a run that fails after its snapshot exists but before it is journaled leaves no snapshot behind', async () => {
    // A driver that took the snapshot and then failed (tagging it, say), as a kill at that moment would.
    const failingAfter = new Proxy(source, {
      get(target, property, receiver) {
        if (property !== 'snapshot') return Reflect.get(target, property, receiver);
        return async (...args: Parameters<MemoryDriver['snapshot']>) => {
          await target.snapshot(...args);
          throw new DriverError('the snapshot was taken, then tagging it failed');
        };
      },
    });
    registry = new DriverRegistry()
      .register(instanceDriver('memsrc', () => failingAfter))
      .register(instanceDriver('memdst', () => target));
    await expect(engine().run(job())).rejects.toMatchObject({ code: 'E_DRIVER' });
    expect(source.snapshots.size).toBe(0);
  });

  it("a cleanup that fails does not hide the run's own error: the run throws it, the journal keeps both, resume finishes", async () => {
    // The transfer fails (the source's reader), then the rollback fails too (the target's delete).
    const failingReader = new Proxy(source, {
      get(target, property, receiver) {
        if (property !== 'openReader') return Reflect.get(target, property, receiver);
        return async () => {
          throw new DriverError('the source disk could not be read');
        };
      },
    });
    let deleteFails = true;
    const failingDelete = new Proxy(target, {
      get(t, property, receiver) {
        if (property !== 'deleteReplica') return Reflect.get(t, property, receiver);
        return async (...args: Parameters<MemoryDriver['deleteReplica']>) => {
          if (deleteFails) throw new DriverError('the replica could not be deleted');
          return t.deleteReplica(...args);
        };
      },
    });
    registry = new DriverRegistry()
      .register(instanceDriver('memsrc', () => failingReader))
      .register(instanceDriver('memdst', () => failingDelete));
    const e = engine();
    const thrown = await e.run(job()).catch((error: unknown) => error);
    expect(thrown).toMatchObject({ code: 'E_DRIVER', message: expect.stringMatching(/source disk could not be read/) });
    const [run] = await e.listRuns();
    expect(run).toMatchObject({
      state: 'cleanup',
      outcome: 'failed',
      error: { code: 'E_DRIVER', message: expect.stringMatching(/source disk could not be read/) },
      cleanupError: { code: 'E_DRIVER', message: expect.stringMatching(/replica could not be deleted/) },
    });
    // The cleanup succeeds on resume: the run ends failed, still with its own error, and no cleanup error.
    deleteFails = false;
    await expect(e.resume(run!.runId)).rejects.toMatchObject({ message: expect.stringMatching(/source disk/) });
    const [ended] = await e.listRuns();
    expect(ended).toMatchObject({ state: 'failed', error: { message: expect.stringMatching(/source disk/) } });
    expect(ended!.cleanupError).toBeUndefined();
  });

  it('asks the change tracker before opening the snapshot reader (a tracker that cannot answer while its disk is attached)', async () => {
    // As XAPI refuses list_changed_blocks while the snapshot VDI is plugged into an appliance reader.
    let open = 0;
    const attaching = new Proxy(source, {
      get(target, property, receiver) {
        if (property === 'openReader') {
          return async (...args: Parameters<MemoryDriver['openReader']>) => {
            const reader = await target.openReader(...args);
            open++;
            const close = reader.close.bind(reader);
            return Object.assign(reader, {
              close: () => {
                open--;
                return close();
              },
            });
          };
        }
        if (property === 'changeTracker') {
          const tracker = target.changeTracker!;
          return {
            changes: (...args: Parameters<typeof tracker.changes>) =>
              open > 0 ? Promise.resolve(undefined) : tracker.changes(...args),
          };
        }
        return Reflect.get(target, property, receiver);
      },
    });
    registry = new DriverRegistry()
      .register(instanceDriver('memsrc', () => attaching))
      .register(instanceDriver('memdst', () => target));
    const e = engine();
    expect((await e.run(job())).state).toBe('completed');
    source.vms
      .get('vm1')!
      .disks.get('a')!
      .fill(9, 2 * MiB, 2 * MiB + 100);
    const second = await e.run(job());
    expect(second.disks.map((d) => d.mode)).toEqual(['tracked', 'tracked']);
    expect(second.stats.blocksChanged).toBe(1);
    expect(same(replicaDisk('a'), source.vms.get('vm1')!.disks.get('a')!)).toBe(true);
  });

  it('uses a verified hash diff when the source cannot track changes, reading the replica', async () => {
    registry = new DriverRegistry()
      .register(
        instanceDriver('memsrc', () => {
          const { changeTracker: _unused, ...rest } = source;
          return { ...rest, capabilities: { ...source.capabilities, changeTracking: false } };
        }),
      )
      .register(instanceDriver('memdst', () => target));
    const e = engine();
    await e.run(job());
    const b = source.vms.get('vm1')!.disks.get('b')!;
    b[b.length - 1]! ^= 0xff; // the last, short block
    const second = await e.run(job());
    expect(second.disks.map((d) => d.mode)).toEqual(['hash-diff', 'hash-diff']);
    expect(second.stats.blocksChanged).toBe(1);
    expect(second.stats.bytesReadReplica).toBe(4 * MiB + 2 * MiB + 12345);
    expect(same(replicaDisk('b'), b)).toBe(true);
  });

  it('detects a replica changed outside replikit and falls back from tracking to a verified diff', async () => {
    const e = engine();
    await e.run(job());
    await target.power('vm1-replica', 'start');
    await target.power('vm1-replica', 'shutdown');
    replicaDisk('a').fill(9, 0, 100); // the booted guest wrote to its disk
    const warnings: string[] = [];
    e.on('warning', (w) => warnings.push(w.code));
    const second = await e.run(job());
    expect(warnings).toContain('W_REPLICA_MODIFIED');
    expect(second.disks[0]!.mode).toBe('hash-diff');
    expect(same(replicaDisk('a'), source.vms.get('vm1')!.disks.get('a')!)).toBe(true);
  });

  it('stops a job that breaks a rule before touching anything, with E_RULE', async () => {
    const e = engine();
    const error = await e.run(job({ method: 'abd', options: { direction: 'pull' } })).catch((err: unknown) => err);
    expect(isReplikitError(error, 'E_RULE')).toBe(true);
    expect(target.vms.size).toBe(0);
    expect(source.snapshots.size).toBe(0);
    const [record] = await e.listRuns();
    expect(record!.state).toBe('failed');
  });

  it('rolls the replica back to its last restore point when a write fails', async () => {
    const e = engine();
    await e.run(job());
    const before = replicaDisk('a').slice();
    const a = source.vms.get('vm1')!.disks.get('a')!;
    fill(a, 9, 0, 2 * MiB);
    let writes = 0;
    target.hooks.beforeWrite = () => {
      if (++writes === 5) throw Object.assign(new Error('no space'), { code: 'ENOSPC' });
    };
    const error = await e.run(job()).catch((err: unknown) => err);
    expect(error).toBeInstanceOf(Error);
    const runs = await e.listRuns();
    const failed = runs[runs.length - 1]!;
    expect(failed.state).toBe('failed');
    expect(failed.rolledBack).toBe(true);
    expect(same(replicaDisk('a'), before)).toBe(true);
    expect(await target.replicaMark({ id: 'vm1-replica', name: 'vm1-replica', disks: [], created: false })).toBe(
      'ready',
    );
    // the failed run's snapshot was dropped; the base stays
    expect(source.snapshots.size).toBe(1);
  });

  it("deletes at its next run a late snapshot of this job's failed run, and no other job's, store's or user's snapshot", async () => {
    const e = engine();
    await e.run(job());
    fill(source.vms.get('vm1')!.disks.get('a')!, 9, 0, 2 * MiB);
    target.hooks.beforeWrite = () => {
      throw Object.assign(new Error('no space'), { code: 'ENOSPC' });
    };
    await e.run(job()).catch(() => undefined);
    target.hooks.beforeWrite = undefined;
    const failed = (await e.listRuns()).at(-1)!;
    expect(failed.state).toBe('failed');
    // A killed process's snapshot call reaches the source after the rollback looked for it.
    const late = await source.snapshot('vm1', `replikit-${failed.runId}`);
    // Another state store's run of this job, another job's run, and a user's own snapshot.
    const others = [
      await source.snapshot('vm1', 'replikit-unit-20261206T000000Z-0a0b0c'),
      await source.snapshot('vm1', 'replikit-other-20261206T000000Z-0a0b0c'),
      await source.snapshot('vm1', `replikit-${failed.runId}-mine`),
      await source.snapshot('vm1', 'before the upgrade'),
    ];
    const next = await e.run(job());
    expect(next.state).toBe('completed');
    const left = [...source.snapshots.values()].map((s) => s.snapshot.id);
    expect(left).not.toContain(late.id);
    expect(left.sort()).toEqual([...others.map((s) => s.id), next.snapshot!.id].sort());
    expect(same(replicaDisk('a'), source.vms.get('vm1')!.disks.get('a')!)).toBe(true);
  });

  it('removes a first replica that never completed', async () => {
    target.hooks.beforeWrite = () => {
      throw new Error('disk on fire');
    };
    await expect(engine().run(job())).rejects.toThrow('disk on fire');
    expect(target.vms.has('vm1-replica')).toBe(false);
  });

  it('is cancelled through its AbortSignal, ends cancelled and rolls back', async () => {
    const e = engine();
    await e.run(job());
    const a = source.vms.get('vm1')!.disks.get('a')!;
    fill(a, 5);
    const controller = new AbortController();
    target.hooks.beforeWrite = () => controller.abort();
    const error = await e.run(job(), { signal: controller.signal }).catch((err: unknown) => err);
    expect(isReplikitError(error, 'E_ABORTED')).toBe(true);
    const runs = await e.listRuns();
    expect(runs[runs.length - 1]!.state).toBe('cancelled');
    expect(same(replicaDisk('a'), a)).toBe(false);
  });

  it('reports progress with absolute, growing counters and journals every transition', async () => {
    const e = engine({ checkpointEveryMs: 0 });
    const events: ProgressEvent[] = [];
    const states: string[] = [];
    e.on('progress', (p) => events.push(p));
    e.on('state', (s) => states.push(s.to));
    const record: RunRecord = await e.run(job());
    expect(states).toEqual(['validate', 'prepare', 'snapshot', 'plan', 'transfer', 'commit', 'cleanup', 'completed']);
    expect(record.history.map((h) => h.state)).toEqual(['created', ...states]);
    expect(events.length).toBeGreaterThan(0);
    for (let i = 1; i < events.length; i++) {
      expect(events[i]!.stats.bytesScanned).toBeGreaterThanOrEqual(events[i - 1]!.stats.bytesScanned);
    }
    const last = events[events.length - 1]!;
    expect(last.stats.bytesScanned).toBe(last.stats.bytesTotal);
  });

  it('refuses a new run while an earlier one is unfinished', async () => {
    const store = new FileStateStore(join(dir, 'state'));
    const e = engine();
    await e.run(job());
    const [done] = await store.listRuns();
    await store.saveRun({ ...done!, runId: 'unit-stuck', state: 'transfer', pid: 999999 });
    const refused = e.run(job());
    await expect(refused).rejects.toMatchObject({ code: 'E_CONFLICT' });
    await expect(refused).rejects.toThrow(
      /did not finish .*its process is gone.*resume unit-stuck.*--rollback.*--abandon/,
    );
  });

  it('tells a second run that the first is running now, not that it did not finish', async () => {
    const store = new FileStateStore(join(dir, 'state'));
    await engine().run(job());
    const [done] = await store.listRuns();
    // A run of another process of this host that is still going (this test's own pid lives).
    await store.saveRun({ ...done!, runId: 'unit-live', state: 'transfer', pid: process.pid });
    const refused = engine().run(job());
    await expect(refused).rejects.toMatchObject({ code: 'E_CONFLICT' });
    await expect(refused).rejects.toThrow(
      `run unit-live of job 'unit' is unfinished; it is running now (pid ${process.pid}); wait for it to finish or cancel it`,
    );
  });

  it('refuses a replica held by a dead run of another folder, and takes over a hold no journal keeps', async () => {
    const first = await engine().run(job());
    const replica = first.replica!;
    const stateDir = new FileStateStore(join(dir, 'state')).location;
    const elsewhere = new FileStateStore(join(dir, 'elsewhere'));
    const dead = { runId: 'unit-gone', host: hostname(), pid: 999999, startedAt: first.startedAt };
    // A run of another state folder crashed holding the replica and its journal there says so:
    // nothing here may touch the replica.
    await elsewhere.saveRun(toJournal({ ...first, runId: 'unit-gone', state: 'transfer', pid: 999999 }));
    await target.claimReplica(replica, { ...dead, stateDir: elsewhere.location });
    const refused = engine().run(job());
    await expect(refused).rejects.toMatchObject({ code: 'E_CONFLICT' });
    await expect(refused).rejects.toThrow(
      /is held by run unit-gone \(host .+, pid 999999, state folder .*elsewhere\).*its process is gone.*`replikit --state-dir ".*elsewhere" resume unit-gone --abandon`/,
    );
    // That state folder deleted: no journal can ever resume or abandon the run, the hold is taken over.
    await rm(elsewhere.location, { recursive: true });
    expect((await engine().run(job())).state).toBe('completed');
    expect(await target.replicaOwner(replica)).toBeUndefined();
    // The same hold left by a run of this folder that its journal does not know: taken over.
    await target.claimReplica(replica, { ...dead, stateDir });
    expect((await engine().run(job())).state).toBe('completed');
    expect(await target.replicaOwner(replica)).toBeUndefined();
    // A hold of a live process is never taken over, whatever its journal says.
    await target.claimReplica(replica, { ...dead, pid: process.pid, stateDir: join(dir, 'nowhere') });
    await expect(engine().run(job())).rejects.toThrow(/it is running now/);
  });

  it('keeps at most `retention` restore points', async () => {
    const e = engine();
    for (let i = 0; i < 4; i++) {
      fill(source.vms.get('vm1')!.disks.get('a')!, 100 + i, 0, 4096);
      await e.run(job({ options: { retention: 2 } }));
    }
    expect(target.vms.get('vm1-replica')!.replica!.points).toHaveLength(2);
  });
});

describe('run state machine', () => {
  it('closes its hasher after each run, or keeps it for later runs with keepHashers until close()', async () => {
    const made: string[] = [];
    let closed = 0;
    const hasher = (algorithm: string) => {
      made.push(algorithm);
      return { ...createNodeHasher(algorithm), close: async () => void closed++ };
    };
    await engine({ hasher }).run(job());
    expect([made.length, closed]).toEqual([1, 1]);
    const keeping = engine({ hasher, keepHashers: true });
    await keeping.run(job());
    await keeping.run(job());
    expect([made.length, closed]).toEqual([2, 1]);
    await keeping.close();
    expect(closed).toBe(2);
  });

  it('throws E_STATE on an invalid transition', () => {
    expect(() => assertTransition('transfer', 'snapshot')).toThrow(/invalid run transition transfer → snapshot/);
    expect(() => assertTransition('completed', 'validate')).toThrowError(expect.objectContaining({ code: 'E_STATE' }));
    expect(() => assertTransition('transfer', 'commit')).not.toThrow();
    expect(() => assertTransition('plan', 'cleanup')).not.toThrow();
  });
});
