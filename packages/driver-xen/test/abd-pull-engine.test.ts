import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket, connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  DriverRegistry,
  defineDriver,
  FileStateStore,
  type Hypervisor,
  type JobSpecInput,
  type PullSource,
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
  }, 180_000); // two pools, four appliances and three runs: 15 s quiet, near 60 s at a load of 15

  it('the source appliance killed mid-pull: the run fails, the replica is rolled back to its last version, nothing stays plugged', async () => {
    // The target appliance reaches the source appliance through a relay here, so the test sees
    // the blocks flow and kills the source agent once they do (the relay then refuses the
    // reconnects: the source stays gone).
    let relay: KillingRelay | undefined;
    const { srcXen, dstXen, vm, disks, engine, job } = await setUp([8 * MiB], (driver, side) => {
      const offer = driver.pullSource;
      if (side !== 'source' || !offer) return;
      Object.assign(driver, {
        pullSource: async (...args: Parameters<NonNullable<XenDriver['pullSource']>>): Promise<PullSource> => {
          const real = await offer(...args);
          if (!relay) return real;
          return { ...real, address: await relay.listen(real.address), close: () => real.close() };
        },
      });
    });
    await src!.writeGuest(vm.uuid, disks[0]!.id, 0, testPattern(5, 100_000));
    const first = await engine.run(job);
    expect(first.outcome).toBe('completed');
    const before = await readWholeDisk(dstXen, (await dstXen.getVM(first.replica!.id)).disks[0]!);

    await src!.writeGuest(vm.uuid, disks[0]!.id, MiB, randomBytes(6 * MiB));
    const [appliance] = await src!.appliances();
    relay = new KillingRelay(MiB, () => {
      const pid = src!.sim.appliance(appliance!.ref)?.pid;
      if (pid !== undefined) process.kill(pid, 'SIGKILL');
    });
    closing.push(relay);
    await expect(engine.run(job)).rejects.toMatchObject({ code: expect.stringMatching(/^E_/) });
    expect(relay.killed).toBe(true);
    const failed = (await engine.listRuns()).find((r) => r.runId !== first.runId);
    console.log(`abd pull, source agent killed: run ${failed?.outcome} with ${JSON.stringify(failed?.error)}`);
    expect(failed?.outcome).toBe('failed');

    const replica = (await dstXen.getVM(first.replica!.id)).disks[0]!;
    expect(compareBytes(await readWholeDisk(dstXen, replica), before)).toBe('equal');
    expect(await dstXen.replicaMark(first.replica!)).toBe('ready');
    expect(await dstXen.replicaOwner(first.replica!)).toBeUndefined();
    for (const pool of [src!, dst!]) expect(await pool.applianceVbds()).toEqual([]);
    // The source appliance restarted after the crash (the simulator's actions_after_crash) and
    // was stopped by the run's end, like the target's.
    await expectAppliancesIdle();
    expect(await srcXen.listSnapshots(vm.uuid)).toHaveLength(1);
  }, 180_000);
});

/**
 * A TCP relay to one address that calls `kill` once `afterBytes` have come back from it, then
 * drops every connection and refuses new ones.
 */
class KillingRelay {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private received = 0;
  killed = false;

  constructor(
    private readonly afterBytes: number,
    private readonly kill: () => void,
  ) {}

  /** Starts relaying to `to`; resolves with the relay's own address. */
  async listen(to: { host: string; port: number }): Promise<{ host: string; port: number }> {
    this.server ??= createServer((client) => {
      if (this.killed) {
        client.destroy();
        return;
      }
      const upstream = tcpConnect(to.port, to.host);
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
        s.on('error', () => undefined);
      }
      client.pipe(upstream);
      upstream.on('data', (chunk: Buffer) => {
        this.received += chunk.length;
        if (!this.killed && this.received >= this.afterBytes) {
          this.killed = true;
          this.kill();
          for (const s of this.sockets) s.destroy();
        }
      });
      upstream.pipe(client);
      upstream.on('close', () => client.destroy());
      client.on('close', () => upstream.destroy());
    });
    const server = this.server;
    if (!server.listening) await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const address = server.address();
    if (address === null || typeof address === 'string') throw new Error('the relay has no TCP address');
    return { host: '127.0.0.1', port: address.port };
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}
