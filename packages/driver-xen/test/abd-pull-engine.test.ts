import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  DriverRegistry,
  defineDriver,
  FileStateStore,
  type Hypervisor,
  type JobSpecInput,
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
 * Issue 17, ABD pull in engine runs: a job `method: abd, options.direction: pull` between two
 * pools, each with its appliance (a real agent process). The engine asks the source driver for an
 * offer of each snapshot disk (plugged RO into the source appliance) and the target driver to pull
 * it (the replica's pending VDI plugged RW into the target appliance, whose agent fetches only the
 * blocks whose digests differ from the source appliance's agent). After each run the replica
 * equals the source snapshot, nothing is plugged and both appliances are halted.
 */

const MiB = 1024 * 1024;
const BLOCK = 64 * 1024;

describe('engine runs of an abd pull job, xen ► xen across two pools', () => {
  let src: AbdPool | undefined;
  let dst: AbdPool | undefined;
  let dir: string;
  const closing: Array<{ close(): Promise<void> }> = [];
  afterEach(async () => {
    for (const c of closing.splice(0).reverse()) await c.close().catch(() => undefined);
    await src?.close();
    await dst?.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** Both pools, a VM of `sizes` on the source, drivers to read each side, and an engine whose xen definition `wrap` may change. */
  async function setUp(sizes: number[], wrap?: (driver: XenDriver, side: string | undefined) => void) {
    src = await startAbdPool();
    dst = await startAbdPool();
    dir = await mkdtemp(join(tmpdir(), 'rk-abd-pull-'));
    const srcXen = await src.driver();
    const dstXen = await dst.driver();
    closing.push(srcXen, dstXen);
    const vm = await src.makeVM('web pull', sizes);
    const disks = (await srcXen.getVM(vm.uuid)).disks;
    const recording = defineDriver({
      ...xenDriver,
      create: async (options, context) => {
        const driver = (await xenDriver.create(options, context)) as Hypervisor as XenDriver;
        wrap?.(driver, context.side);
        return driver;
      },
    });
    const engine = new ReplicationEngine({
      stateStore: new FileStateStore(join(dir, 'state')),
      drivers: new DriverRegistry().register(recording),
      transport: localTransport(),
    });
    closing.push(engine);
    const warnings: string[] = [];
    engine.on('warning', (w) => warnings.push(w.message));
    const job: JobSpecInput = {
      name: 'abd-pull',
      source: { driver: 'xen', url: src.sim.url, passwordEnv: PASSWORD_ENV, abd: { ips: src.ips }, vm: 'web pull' },
      target: {
        driver: 'xen',
        url: dst.sim.url,
        passwordEnv: PASSWORD_ENV,
        abd: { ips: dst.ips },
        replicaName: 'web-pulled',
      },
      method: 'abd',
      blockSize: BLOCK,
      options: { direction: 'pull', replicationCache: true },
    };
    return { srcXen, dstXen, vm, disks, engine, job, warnings };
  }

  async function expectReplicaEqualsSnapshot(srcXen: XenDriver, dstXen: XenDriver, record: RunRecord): Promise<void> {
    const info = await dstXen.getVM(record.replica!.id);
    for (const [i, disk] of info.disks.entries()) {
      const expected = await readWholeDisk(srcXen, record.snapshot!.disks[i]!);
      expect(compareBytes(await readWholeDisk(dstXen, disk), expected)).toBe('equal');
    }
  }

  async function expectAppliancesIdle(): Promise<void> {
    for (const pool of [src!, dst!]) {
      expect(await pool.applianceVbds()).toEqual([]);
      expect((await pool.appliances()).map((a) => a.power)).toEqual(['Halted']);
    }
  }

  it('full, 1 % guest writes, incremental: the replica equals each snapshot, the incremental pulls about the changed blocks', async () => {
    const size = 16 * MiB;
    const { srcXen, dstXen, vm, disks, engine, job, warnings } = await setUp([size, 3 * MiB + 512]);
    await src!.writeGuest(vm.uuid, disks[0]!.id, 4095, testPattern(1, 300_000));
    await src!.writeGuest(vm.uuid, disks[1]!.id, 3 * MiB - 7, testPattern(2, 519));

    const first = await engine.run(job);
    expect(first.outcome, JSON.stringify(first.error)).toBe('completed');
    expect(first.disks.map((d) => [d.mode, d.reason?.code])).toEqual([
      ['full', 'FIRST_SEED'],
      ['full', 'FIRST_SEED'],
    ]);
    // Blocks holding data: 300 000 bytes from 4095 cover 5 blocks; 519 bytes across 3 MiB cover 2.
    expect(first.disks.map((d) => d.stats.blocksChanged)).toEqual([5, 2]);
    expect(warnings.filter((w) => w.startsWith('cache-ignored-for-pull: '))).toHaveLength(1);
    await expectAppliancesIdle();
    await expectReplicaEqualsSnapshot(srcXen, dstXen, first);

    const blocks = size / BLOCK;
    const changed = new Set<number>();
    for (let i = 0; changed.size < blocks / 100 + 1; i++) changed.add((i * 7919 + 3) % blocks);
    for (const b of changed) await src!.writeGuest(vm.uuid, disks[0]!.id, b * BLOCK, testPattern(100 + b, BLOCK));
    warnings.splice(0);
    const second = await engine.run(job);
    expect(second.outcome, JSON.stringify(second.error)).toBe('completed');
    expect(second.disks.map((d) => [d.mode, d.digestSource, d.reason?.code])).toEqual([
      ['hash-diff', 'replica', 'PULL_IGNORES_CACHE'],
      ['hash-diff', 'replica', 'PULL_IGNORES_CACHE'],
    ]);
    console.log(
      `abd pull incremental: ${changed.size} blocks written by the guest, ${second.disks[0]!.stats.blocksChanged} pulled of ${second.disks[0]!.stats.blocksScanned} compared`,
    );
    expect(second.disks.map((d) => d.stats.blocksChanged)).toEqual([changed.size, 0]);
    expect(second.stats.bytesRead).toBe(changed.size * BLOCK);
    expect(warnings.filter((w) => w.startsWith('cache-ignored-for-pull: '))).toHaveLength(1);
    await expectAppliancesIdle();
    await expectReplicaEqualsSnapshot(srcXen, dstXen, second);
  });
});
