import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DriverRegistry, FileStateStore, ReplicationEngine } from '@replikit/core';
import { compareBytes, readWholeDisk, testPattern } from '@replikit/core/testing';
import { localTransport } from '@replikit/transport';
import { afterEach, describe, expect, it } from 'vitest';
import { type XenDriver, xenDriver } from '../src/index.js';
import { type AbdPool, startAbdPool } from './helpers/abd-pool.js';
import { PASSWORD_ENV } from './helpers/xen-pool.js';

/*
 * Issue 17, crash safety (the ABD matrix, seed 1395666165 point 15): a process killed in the
 * `snapshot` state had its VM.snapshot request still on the wire; the pool took the snapshot
 * after the rollback had looked for it, and it stayed. The job's next run deletes such a snapshot
 * (named for a run of this job that this state store journaled as failed or cancelled), and no
 * other: not the base, not another store's run's, not a user's.
 */

const MiB = 1024 * 1024;
type XRecords = Record<string, Record<string, unknown>>;

describe('a source snapshot a rolled-back run left after its rollback', () => {
  let pool: AbdPool | undefined;
  let xen: XenDriver | undefined;
  let dir: string | undefined;
  afterEach(async () => {
    await xen?.close();
    await pool?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('is deleted by the next run of the job; the base, other stores’ and users’ snapshots stay', async () => {
    pool = await startAbdPool();
    const p = pool;
    dir = await mkdtemp(join(tmpdir(), 'rk-xen-late-'));
    xen = await p.driver();
    const vm = await p.makeVM('late', [2 * MiB, MiB + 512]);
    const disks = (await xen.getVM(vm.uuid)).disks;
    await p.writeGuest(vm.uuid, disks[0]!.id, 4095, testPattern(1, 100_000));
    const engine = new ReplicationEngine({
      stateStore: new FileStateStore(join(dir, 'state')),
      drivers: new DriverRegistry().register(xenDriver),
      ruleSets: [],
      transport: localTransport(),
    });
    const endpoint = { driver: 'xen', url: p.sim.url, passwordEnv: PASSWORD_ENV, abd: { ips: p.ips } };
    const job = { name: 'late', source: { ...endpoint, vm: 'late' }, target: { ...endpoint }, method: 'abd' };
    const snapshotNames = async () =>
      Object.values(await p.call<XRecords>('VM.get_all_records'))
        .filter((r) => r.is_a_snapshot === true && r.snapshot_of === vm.ref)
        .map((r) => String(r.name_label))
        .sort();
    try {
      const first = await engine.run(job);
      expect(first.outcome).toBe('completed');

      // The second run is cancelled once its snapshot is journaled, and rolled back.
      await p.writeGuest(vm.uuid, disks[1]!.id, 0, testPattern(2, 70_000));
      const controller = new AbortController();
      const onState = (event: { to: string }) => {
        if (event.to === 'plan') controller.abort();
      };
      engine.on('state', onState);
      const cancelled = await engine.run(job, { signal: controller.signal }).catch(() => undefined);
      engine.off('state', onState);
      expect(cancelled).toBeUndefined();
      const runs = await engine.listRuns();
      const rolledBack = runs.at(-1)!;
      expect(rolledBack.state).toBe('cancelled');
      expect(await snapshotNames()).toEqual([`replikit replikit-${first.runId}`]);

      // Its VM.snapshot request arrives late, as the name VM.snapshot gives it; plus others' snapshots.
      await p.call('VM.snapshot', vm.ref, `replikit replikit-${rolledBack.runId}`);
      const others = [
        'replikit replikit-late-20261206T000000Z-0a0b0c', // a run of this job another state store keeps
        'replikit replikit-other-20261206T000000Z-0a0b0c', // another job's
        'before the upgrade', // a user's
      ];
      for (const name of others) await p.call('VM.snapshot', vm.ref, name);

      const third = await engine.run(job);
      expect(third.outcome, JSON.stringify(third.error)).toBe('completed');
      expect(await snapshotNames()).toEqual([...others, `replikit replikit-${third.runId}`].sort());
      const replica = await xen.getVM(third.replica!.id);
      for (const [i, disk] of replica.disks.entries()) {
        const source = await readWholeDisk(xen, third.snapshot!.disks[i]!);
        expect(compareBytes(await readWholeDisk(xen, disk), source)).toBe('equal');
      }
    } finally {
      await engine.close();
    }
  }, 60_000);
});
