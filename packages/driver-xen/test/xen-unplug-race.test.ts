import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DriverRegistry, FileStateStore, ReplicationEngine, type RunRecord } from '@replikit/core';
import { compareBytes, readWholeDisk, testPattern } from '@replikit/core/testing';
import { localTransport } from '@replikit/transport';
import { afterEach, describe, expect, it } from 'vitest';
import { type XenDriver, xenDriver } from '../src/index.js';
import { type AbdPool, startAbdPool } from './helpers/abd-pool.js';
import { PASSWORD_ENV } from './helpers/xen-pool.js';

/*
 * Issue 17, faults: `VDI_IN_USE` after an unplug, from the simulator's unplugRace (XAPI's race
 * with tapdisk: a VDI unplugged from the appliance stays "in use" for a while), not a one-off
 * injected error. Every VDI the run unplugs lingers; the pool lets go of them when the run first
 * VDI_IN_USE for one. The run completes (retried), the replica equals the
 * source snapshot, nothing is left plugged and the appliance is halted.
 */

const MiB = 1024 * 1024;
type XRecords = Record<string, Record<string, unknown>>;

describe('VDI_IN_USE after an unplug (unplugRace)', () => {
  let pool: AbdPool;
  let dir: string;
  let xen: XenDriver;
  const engines: ReplicationEngine[] = [];
  afterEach(async () => {
    for (const engine of engines.splice(0)) await engine.close();
    await xen?.close();
    await pool?.close();
    await rm(dir, { recursive: true, force: true });
  });

  for (const method of ['abd', 'cbt']) {
    it(`${method}, through the target appliance: two incremental runs meet the race, are retried and complete`, async () => {
      pool = await startAbdPool();
      dir = await mkdtemp(join(tmpdir(), 'rk-unplug-race-'));
      xen = await pool.driver();
      const vm = await pool.makeVM(`race ${method}`, [4 * MiB, 3 * MiB + 512]);
      const disks = (await xen.getVM(vm.uuid)).disks;
      await pool.writeGuest(vm.uuid, disks[0]!.id, 4095, testPattern(1, 300_000));
      const engine = new ReplicationEngine({
        stateStore: new FileStateStore(join(dir, 'state')),
        drivers: new DriverRegistry().register(xenDriver),
        ruleSets: [],
        transport: localTransport(),
      });
      engines.push(engine);
      const endpoint = { driver: 'xen', url: pool.sim.url, passwordEnv: PASSWORD_ENV, abd: { ips: pool.ips } };
      const job = {
        name: `race-${method}`,
        source: { ...endpoint, vm: `race ${method}` },
        target: { ...endpoint, replicaName: `race-${method}` },
        method,
      };
      const expectReplica = async (record: RunRecord) => {
        const info = await xen.getVM(record.replica!.id);
        for (const [i, disk] of info.disks.entries()) {
          const expected = await readWholeDisk(xen, record.snapshot!.disks[i]!);
          expect(compareBytes(await readWholeDisk(xen, disk), expected)).toBe('equal');
        }
      };
      const first = await engine.run(job);
      expect(first.outcome).toBe('completed');

      // The race: unplugged VDIs linger; once the pool has answered VDI_IN_USE for one, they are
      // let go (tapdisk ended). A VDI unplugged in one run is destroyed in the next (the replaced
      // replica disk, the previous snapshot): two incremental runs meet it.
      let raced = 0;
      const faults = pool.sim.faults;
      const isLingering = faults.isLingering.bind(faults);
      faults.isLingering = (vdi) => {
        const lingering = isLingering(vdi);
        if (lingering) {
          raced++;
          queueMicrotask(() => faults.releaseUnplugged());
        }
        return lingering;
      };
      faults.unplugRace = true;
      try {
        for (const round of [2, 3]) {
          await pool.writeGuest(vm.uuid, disks[0]!.id, round * MiB, testPattern(round, 64 * 1024));
          await pool.writeGuest(vm.uuid, disks[1]!.id, round * 4096, testPattern(round + 10, 4096));
          const record = await engine.run(job);
          expect(record.outcome, JSON.stringify(record.error)).toBe('completed');
          await expectReplica(record);
        }
      } finally {
        faults.unplugRace = false;
        faults.isLingering = isLingering;
      }
      expect(raced).toBeGreaterThan(0);
      expect(await pool.applianceVbds()).toEqual([]);
      expect((await pool.appliances()).map((a) => a.power)).toEqual(['Halted']);
      const vbds = await pool.call<XRecords>('VBD.get_all_records');
      const vms = await pool.call<XRecords>('VM.get_all_records');
      const plugged = Object.values(vbds).filter(
        (vbd) => vbd.currently_attached === true && vms[vbd.VM as string]?.power_state !== 'Running',
      );
      expect(plugged).toEqual([]);
    });
  }
});
