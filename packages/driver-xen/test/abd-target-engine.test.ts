import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  DriverRegistry,
  defineDriver,
  FileStateStore,
  type Hypervisor,
  ReplicationEngine,
  type RunRecord,
} from '@replikit/core';
import { compareBytes, readWholeDisk, testPattern } from '@replikit/core/testing';
import { localTransport } from '@replikit/transport';
import { afterEach, describe, expect, it } from 'vitest';
import { type XenDriver, xenDriver } from '../src/index.js';
import { type AbdPool, startAbdPool } from './helpers/abd-pool.js';
import { PASSWORD_ENV } from './helpers/xen-pool.js';

/*
 * Issue 17, ABD in engine runs: a Xen target with an `abd` section writes its pending replica
 * VDIs through the pool's appliance (a real agent process), for method `abd` (push: the source
 * reads through its appliance too) and for `cbt`. After each run the replica equals the source
 * snapshot (read back through XAPI/NBD), nothing is plugged into the appliance and the appliance
 * (not persistent) is halted.
 */

const MiB = 1024 * 1024;
const BLOCK = 64 * 1024;

describe('engine runs into a xen target through its appliance', () => {
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

  /** The engine with a xen definition that keeps the drivers it made (to read their ABD stats). */
  function engineFor(method: string) {
    const made: Array<{ side: string | undefined; driver: XenDriver }> = [];
    const recording = defineDriver({
      ...xenDriver,
      create: async (options, context) => {
        const driver = (await xenDriver.create(options, context)) as Hypervisor as XenDriver;
        made.push({ side: context.side, driver });
        return driver;
      },
    });
    const engine = new ReplicationEngine({
      stateStore: new FileStateStore(join(dir, 'state')),
      drivers: new DriverRegistry().register(recording),
      ruleSets: [],
      transport: localTransport(),
    });
    engines.push(engine);
    const endpoint = { driver: 'xen', url: pool.sim.url, passwordEnv: PASSWORD_ENV, abd: { ips: pool.ips } };
    const job = {
      name: `abd-${method}`,
      source: { ...endpoint, vm: `web ${method}` },
      target: { ...endpoint, replicaName: `abd-${method}` },
      method,
    };
    return {
      made,
      run: async (): Promise<RunRecord> => {
        made.splice(0);
        const record = await engine.run(job);
        expect(record.outcome, JSON.stringify(record.error)).toBe('completed');
        return record;
      },
    };
  }

  async function expectReplica(record: RunRecord, expected: Uint8Array[]): Promise<void> {
    const info = await xen.getVM(record.replica!.id);
    expect(info.disks.map((d) => d.size)).toEqual(expected.map((e) => e.length));
    for (const [i, disk] of info.disks.entries()) {
      expect(compareBytes(await readWholeDisk(xen, disk), expected[i]!)).toBe('equal');
    }
  }

  async function expectApplianceIdle(): Promise<void> {
    expect(await pool.applianceVbds()).toEqual([]);
    expect((await pool.appliances()).map((a) => a.power)).toEqual(['Halted']);
  }

  async function guestWritesOnePercent(vm: string, disk: string, size: number, seed: number): Promise<number[]> {
    const blocks = Math.floor(size / BLOCK);
    const count = Math.max(3, Math.floor(blocks / 100));
    const picked = new Set<number>();
    for (let i = 0; picked.size < count; i++) picked.add((i * 7919 + seed * 104_729) % blocks);
    const sorted = [...picked].sort((a, b) => a - b);
    for (const b of sorted) await pool.writeGuest(vm, disk, b * BLOCK, testPattern(seed * 1000 + b, BLOCK));
    return sorted;
  }

  for (const method of ['abd', 'cbt']) {
    it(`xen ► xen, ${method}, target with abd: full, 1 % guest writes, incremental; replica equal, appliance idle after each run`, async () => {
      pool = await startAbdPool();
      dir = await mkdtemp(join(tmpdir(), 'rk-abd-target-'));
      xen = await pool.driver();
      const size = 32 * MiB;
      const vm = await pool.makeVM(`web ${method}`, [size, 3 * MiB + 512]);
      const disks = (await xen.getVM(vm.uuid)).disks;
      await pool.writeGuest(vm.uuid, disks[0]!.id, 4095, testPattern(1, 300_000));
      await pool.writeGuest(vm.uuid, disks[1]!.id, 3 * MiB - 7, testPattern(2, 519));
      const { run, made } = engineFor(method);
      const snapshotBytes = async (record: RunRecord) =>
        Promise.all(record.snapshot!.disks.map((d) => readWholeDisk(xen, d)));
      const targetStats = () => made.find((m) => m.side === 'target')?.driver.abdWriteStats;

      const first = await run();
      expect(first.disks.map((d) => d.mode)).toEqual(['full', 'full']);
      expect(targetStats()?.dataBlocks).toBeGreaterThan(0);
      await expectApplianceIdle();
      await expectReplica(first, await snapshotBytes(first));

      const written = await guestWritesOnePercent(vm.uuid, disks[0]!.id, size, 3);
      const second = await run();
      expect(second.disks.map((d) => d.mode)).toEqual(['tracked', 'tracked']);
      const stats = targetStats()!;
      // Exactly the changed 64 KiB blocks reach the target VDI (5 here: 320 KiB), not a 2 MiB
      // block per change, and none needed a read-modify-write.
      expect(stats).toEqual({
        dataBytes: written.length * BLOCK,
        dataBlocks: written.length,
        zeroBlocks: 0,
        readModifyWrites: 0,
      });
      await expectApplianceIdle();
      await expectReplica(second, await snapshotBytes(second));
    });
  }
});
