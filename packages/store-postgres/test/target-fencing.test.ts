import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type Hypervisor,
  isReplikitError,
  type ReplicaLease,
  ReplicationEngine,
  type RestorePoint,
  registerDriver,
  type StateStore,
} from '@replikit/core';
import { createFileDriver, createFileVM, fileDriver, openGuestDisk } from '@replikit/driver-file';
import { localTransport } from '@replikit/transport';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PostgresStateStore } from '../src/index.js';
import { startTestPostgres, type TestPostgres } from '../src/testing/index.js';

const MiB = 1024 * 1024;

let server: TestPostgres;
const folders: string[] = [];
beforeAll(async () => {
  server = await startTestPostgres();
});
afterAll(async () => {
  await server?.stop();
  for (const dir of folders) await rm(dir, { recursive: true, force: true });
});

/** A promise and the function that settles it. */
function gate(): { opened: Promise<void>; open: () => void } {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { opened, open };
}

/**
 * A file target whose first `createRestorePoint` stops before it reaches the driver (as a worker
 * paused by a GC or `SIGSTOP` between its lease check and its commit): `paused` resolves when it
 * stops, `resume()` lets it go on; `committed` settles with what the late commit came to.
 */
function pausingTarget(root: string) {
  const stopped = gate();
  const resumed = gate();
  let settle!: (outcome: RestorePoint | unknown) => void;
  const committed = new Promise<RestorePoint | unknown>((resolve) => {
    settle = resolve;
  });
  let first = true;
  const driver = (): Hypervisor => {
    const real = createFileDriver({ root, reflink: false });
    return new Proxy(real, {
      get(target, key) {
        const value = Reflect.get(target, key, target);
        if (key !== 'createRestorePoint' || typeof value !== 'function') {
          return typeof value === 'function' ? value.bind(target) : value;
        }
        return async (...args: unknown[]) => {
          if (!first) return value.apply(target, args);
          first = false;
          stopped.open();
          await resumed.opened;
          try {
            const point = (await value.apply(target, args)) as RestorePoint;
            settle(point);
            return point;
          } catch (error) {
            settle(error);
            throw error;
          }
        };
      },
    });
  };
  return { driver, paused: stopped.opened, resume: resumed.open, committed };
}

/**
 * `store` whose leases stop renewing from `frozen()` on, like those of a paused process: a renewal
 * due meanwhile is made only once `thawed` resolves.
 */
function freezingStore(store: PostgresStateStore, thawed: Promise<unknown>) {
  let isFrozen = false;
  const wrapLease = (lease: ReplicaLease): ReplicaLease =>
    new Proxy(lease, {
      get(target, key) {
        const value = Reflect.get(target, key, target);
        if (key !== 'heartbeat' || typeof value !== 'function') {
          return typeof value === 'function' ? value.bind(target) : value;
        }
        return async () => {
          if (isFrozen) await thawed;
          return value.apply(target, []);
        };
      },
    });
  const wrapped = new Proxy(store, {
    get(target, key) {
      const value = Reflect.get(target, key, target);
      if (key === 'leaseReplica' && typeof value === 'function') {
        return async (...args: unknown[]) => wrapLease((await value.apply(target, args)) as ReplicaLease);
      }
      return typeof value === 'function' ? value.bind(target) : value;
    },
  }) as StateStore;
  return {
    store: wrapped,
    freeze: () => {
      isFrozen = true;
    },
  };
}

describe('fencing the target: a worker paused past its lease cannot commit on the replica', () => {
  it("its late commit is refused by the file target (E_LEASE_LOST) and does not commit another run's writes", async () => {
    const url = await server.createDatabase();
    const dir = await mkdtemp(join(tmpdir(), 'replikit-target-fence-'));
    folders.push(dir);
    const vms = join(dir, 'vms');
    const replicas = join(dir, 'replicas');
    registerDriver(fileDriver, { replace: true });
    await createFileVM(vms, { name: 'web', disks: [{ id: 'system', size: 4 * MiB }], changeTracking: true });
    const job = {
      name: 'web',
      source: { driver: 'file', root: vms, vm: 'web', reflink: false },
      target: { driver: 'file', root: replicas, reflink: false },
      method: 'qhybrid',
      options: { retention: 100 },
    };
    const guestWrite = async (seed: number) => {
      const guest = await openGuestDisk(vms, 'web', 'system');
      await guest.write(seed * 256 * 1024, new Uint8Array(100_000).fill(seed));
      await guest.close();
    };
    const storeA = await PostgresStateStore.open({ connectionString: url });
    const storeB = await PostgresStateStore.open({ connectionString: url });
    const admin = await PostgresStateStore.open({ connectionString: url });
    try {
      // Worker A: its first commit pauses; its lease renewals freeze with it.
      const targetA = pausingTarget(replicas);
      const a = freezingStore(storeA, targetA.committed);
      const engineA = new ReplicationEngine({
        transport: localTransport(),
        stateStore: a.store,
        targetDriver: () => targetA.driver(),
        leaseTtlMs: 60_000,
      });
      await guestWrite(1);
      const runA = engineA.run(job).catch((error: unknown) => error);
      await targetA.paused;
      a.freeze();
      const [{ run_id: runId, lease_epoch: epochA }] = (
        await admin.query<{ run_id: string; lease_epoch: string }>(
          'SELECT run_id, lease_epoch FROM replikit.runs WHERE job = $1',
          [job.name],
        )
      ).rows as [{ run_id: string; lease_epoch: string }];

      // A's lease runs out while it is paused, and the partition that paused it ends its
      // connections (its job lock with them).
      await admin.query('UPDATE replikit.replica_leases SET expires_at = clock_timestamp() WHERE replica = $1', [
        job.name,
      ]);
      await admin.query(
        `SELECT pg_terminate_backend(pid) FROM pg_locks
         WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
        [],
      );

      // Worker B resumes A's run from the journal and commits it, then runs the job again; that
      // second run (C) stops before its commit, its writes pending on the replica.
      const targetC = pausingTarget(replicas);
      let pauseC = false;
      const engineB = new ReplicationEngine({
        transport: localTransport(),
        stateStore: storeB,
        targetDriver: () => (pauseC ? targetC.driver() : undefined),
        leaseTtlMs: 60_000,
      });
      let resumed = await engineB.resume(runId).catch((error: unknown) => error);
      // The job lock ends with its connection as the server notices: wait for that event.
      while (isReplikitError(resumed, 'E_CONFLICT')) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        resumed = await engineB.resume(runId).catch((error: unknown) => error);
      }
      expect((resumed as { state?: string }).state).toBe('completed');
      await guestWrite(2);
      pauseC = true;
      const runC = engineB.run(job);
      await targetC.paused;

      // A wakes up and commits: the target refuses its stale epoch.
      targetA.resume();
      const late = await targetA.committed;
      const outcomeA = await runA;
      targetC.resume();
      const c = await runC;

      const target = createFileDriver({ root: replicas, reflink: false });
      const vm = (await target.listVMs())[0]!;
      const points = await target.listRestorePoints({ id: vm.id, name: vm.name, disks: vm.disks, created: false });
      const { rows: epochs } = await admin.query<{ run_id: string; lease_epoch: string }>(
        'SELECT run_id, lease_epoch FROM replikit.runs ORDER BY started_at',
        [],
      );
      const refusals = isReplikitError(late, 'E_LEASE_LOST') ? 1 : 0;
      console.log(
        `paused worker (epoch ${epochA}): late commit ${isReplikitError(late) ? late.code : 'MADE'}; run A ended ${
          isReplikitError(outcomeA) ? outcomeA.code : JSON.stringify((outcomeA as { state?: string }).state)
        }; journal epochs ${JSON.stringify(epochs)}; restore points ${JSON.stringify(points.map((p) => p.label))}; target fencing rejections: ${refusals}`,
      );
      expect(isReplikitError(late, 'E_LEASE_LOST')).toBe(true);
      // A's run ends with its own error, not with that of the job lock its lost connection ended.
      expect(isReplikitError(outcomeA, 'E_LEASE_LOST')).toBe(true);
      expect(c.state).toBe('completed');
      // One restore point per run, each the one its journal records.
      expect(points.map((p) => p.label)).toEqual([runId, c.runId]);
      expect((await storeB.loadRun(runId))?.stages.commit?.restorePoint.id).toBe(points[0]!.id);
      expect((await storeB.loadRun(c.runId))?.stages.commit?.restorePoint.id).toBe(points[1]!.id);
      expect((await storeB.loadJob(job.name))?.lastCompletedRunId).toBe(c.runId);
    } finally {
      await storeA.close().catch(() => undefined);
      await storeB.close();
      await admin.close();
    }
  });
});
