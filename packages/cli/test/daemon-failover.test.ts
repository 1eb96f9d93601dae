// Issue 19: a test failover while the daemon keeps replicating the same job. The daemon runs on a
// fake clock; during the clone's health check the test moves the clock to the next slot and waits
// for the daemon to be idle again (an event, not time), so a real replication run happens while
// the clone exists.
import { join } from 'node:path';
import {
  type CloneInfo,
  Daemon,
  DriverRegistry,
  FailoverEngine,
  FakeClock,
  FileFailoverStore,
  type Hypervisor,
  parseJob,
  type Replica,
} from '@replikit/core';
import { createFileDriver, fileDriver, writeGuestDisk } from '@replikit/driver-file';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createDaemonRig, type DaemonRig, driveUntil, newRunLog, throttled } from './helpers/daemon-rig.js';
import { digestOf } from './helpers/file-vm.js';

const T0 = 1_800_000_000_000;
let rig: DaemonRig;

beforeEach(async () => {
  rig = await createDaemonRig();
});
afterEach(async () => {
  await rig.close();
});

async function vmDigest(hv: Hypervisor, id: string): Promise<string> {
  const vm = await hv.getVM(id);
  return (await Promise.all(vm.disks.map((disk) => digestOf(hv, disk)))).join(',');
}

describe('test failover under a running daemon', () => {
  it('the clone holds the point, a scheduled run completes meanwhile, the clone goes, earlier points stay', async () => {
    const clock = new FakeClock(T0);
    const log = newRunLog();
    const spec = rig.job('dr', { schedule: { every: '2s' }, retention: 5 });
    const daemon = new Daemon({ engine: throttled(rig.engine, clock, 0, log), jobs: [spec], clock });
    await daemon.start();
    const target = createFileDriver({ root: join(rig.dir, 'replicas') });
    try {
      await driveUntil(clock, T0 + 2000); // the run of the slot at 2 s
      expect(log.outcomes).toEqual(['completed']);
      const info = await target.getVM('dr-replica');
      const replica: Replica = { id: info.id, name: info.name, disks: info.disks, created: false };
      const pointsBefore = await target.listRestorePoints(replica);
      const pointDigest = await vmDigest(target, replica.id);

      const failover = new FailoverEngine({
        stateStore: rig.store,
        failoverStore: new FileFailoverStore(join(rig.dir, '.replikit')),
        replication: rig.engine,
        drivers: new DriverRegistry().register(fileDriver),
      });
      let seen: CloneInfo | undefined;
      const result = await failover.test(parseJob(spec), {
        check: async (clone, hv) => {
          seen = clone;
          expect(await vmDigest(hv, clone.id)).toBe(pointDigest);
          // The guest writes, and the daemon's next slot replicates it while the clone runs.
          await writeGuestDisk(join(rig.dir, 'vms'), 'guest', 'disk0', 4096, Buffer.alloc(65536, 7));
          await driveUntil(clock, T0 + 4000);
          expect(log.outcomes).toEqual(['completed', 'completed']);
          expect(await vmDigest(hv, clone.id)).toBe(pointDigest); // the run did not touch the clone
        },
      });
      expect(result.verdict).toMatchObject({ passed: true });
      expect(seen).toBeDefined();
      expect(await target.listClones!()).toEqual([]);
      const pointsAfter = (await target.listRestorePoints(replica)).map((p) => p.id);
      for (const p of pointsBefore) expect(pointsAfter).toContain(p.id);
      expect(pointsAfter.length).toBe(pointsBefore.length + 1); // the daemon's run during the test
      expect(await rig.replicaEqualsSource('dr')).toBe(true);
    } finally {
      await daemon.stop();
      await target.close();
    }
  });
});
