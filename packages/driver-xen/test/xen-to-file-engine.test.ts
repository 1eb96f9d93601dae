import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DriverRegistry, FileStateStore, ReplicationEngine, type RunRecord } from '@replikit/core';
import { compareBytes, readWholeDisk, testPattern } from '@replikit/core/testing';
import { createFileDriver, fileDriver } from '@replikit/driver-file';
import { localTransport } from '@replikit/transport';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type XenDriver, xenDriver } from '../src/index.js';
import { PASSWORD_ENV, startPool, type TestPool } from './helpers/xen-pool.js';

const MiB = 1024 * 1024;

describe('the engine replicates a xen VM to the file driver (Q-Hybrid)', () => {
  let pool: TestPool;
  let dir: string;
  let xen: XenDriver;
  beforeEach(async () => {
    pool = await startPool();
    dir = await mkdtemp(join(tmpdir(), 'rk-xen-file-'));
    xen = await pool.driver();
  });
  afterEach(async () => {
    await xen.close();
    await pool.close();
    await rm(dir, { recursive: true, force: true });
  });

  /**
   * An engine replicating the xen VM `vm` into a file-driver replica, that driver (to read the
   * replica), and `run`: one run, checked completed with every replica disk equal to the source
   * snapshot's.
   */
  function xenToFile(vm: string) {
    const drivers = new DriverRegistry().register(xenDriver).register(fileDriver);
    const engine = new ReplicationEngine({
      stateStore: new FileStateStore(join(dir, 'state')),
      drivers,
      transport: localTransport(),
    });
    const job = {
      name: 'xen-to-file',
      source: { driver: 'xen', url: pool.sim.url, passwordEnv: PASSWORD_ENV, vm },
      target: { driver: 'file', root: join(dir, 'replicas'), reflink: false },
      method: 'qhybrid',
    };
    const target = createFileDriver({ root: join(dir, 'replicas') });
    const run = async (): Promise<RunRecord> => {
      const record = await engine.run(job);
      expect(record.outcome, JSON.stringify(record.error)).toBe('completed');
      const replica = (await target.listVMs())[0]!;
      for (const [i, disk] of record.snapshot!.disks.entries()) {
        const source = await readWholeDisk(xen, disk);
        expect(compareBytes(await readWholeDisk(target, replica.disks[i]!), source)).toBe('equal');
      }
      return record;
    };
    return { engine, target, run };
  }

  for (const cbt of [true, false]) {
    it(`full, guest writes, incremental (${cbt ? 'tracked by CBT' : 'hash-diff, CBT off'}): the replica equals the source snapshot`, async () => {
      const size = 12 * MiB + 1536;
      const name = `web "q" $(x) ${cbt ? 'cbt' : 'plain'}`;
      const vm = await pool.makeVM(name, [size, 2 * MiB], { cbt });
      const disks = (await xen.getVM(vm.uuid)).disks;
      const write = (disk: number, offset: number, length: number, seed: number) =>
        pool.writeGuest(vm.uuid, disks[disk]!.id, offset, testPattern(seed, length));
      await write(0, 4095, 70_000, 1);
      await write(0, size - 3, 3, 2);
      await write(1, 0, 512, 3);

      const { engine, target, run } = xenToFile(name);
      const runAndCompare = async () => (await run()).disks.map((d) => d.mode);
      try {
        expect(await runAndCompare()).toEqual(['full', 'full']);
        await write(0, 1, 10, 4);
        await write(0, 65_535, 2, 5);
        await write(0, 6 * MiB + 7, 300_000, 6);
        await write(0, size - 4100, 4100, 7);
        const modes = await runAndCompare();
        expect(modes[0]).toBe(cbt ? 'tracked' : 'hash-diff');
      } finally {
        await engine.close();
        await target.close();
      }
    });
  }

  it('a VM whose name cannot be a folder (a line break, a slash, 300 characters) replicates into a folder of its own', async () => {
    const names = ['web\nline', 'web/line', `${'é'.repeat(150)}${'x'.repeat(150)}`];
    for (const name of names) await pool.makeVM(name, [MiB + 512]);
    const folders: string[] = [];
    for (const name of names) {
      const { engine, target } = xenToFile(name);
      try {
        const record = await engine.run({
          name: 'hostile-to-file',
          source: { driver: 'xen', url: pool.sim.url, passwordEnv: PASSWORD_ENV, vm: name },
          target: { driver: 'file', root: join(dir, 'replicas'), reflink: false },
          method: 'qhybrid',
        });
        expect(record.outcome, JSON.stringify(record.error)).toBe('completed');
        const replica = (await target.listVMs()).find((vm) => vm.name === record.replica!.name)!;
        expect(
          compareBytes(
            await readWholeDisk(target, replica.disks[0]!),
            await readWholeDisk(xen, record.snapshot!.disks[0]!),
          ),
        ).toBe('equal');
        folders.push(record.replica!.name);
      } finally {
        await engine.close();
        await target.close();
      }
    }
    expect(new Set(folders).size).toBe(3);
    for (const folder of folders) {
      expect(folder).toMatch(/^[^/\\\n]+-[0-9a-f]{8}-replica$/);
      expect(Buffer.byteLength(folder)).toBeLessThanOrEqual(255);
    }
  });

  it('after a tracked run, a CBT reset gives a hash-diff run with reason TRACKING_RESET, then tracked runs again', async () => {
    const size = 8 * MiB;
    const vm = await pool.makeVM('reset', [size]);
    const disk = (await xen.getVM(vm.uuid)).disks[0]!;
    const write = (offset: number, seed: number) => pool.writeGuest(vm.uuid, disk.id, offset, testPattern(seed, 9000));
    await write(12_345, 1);
    const { engine, target, run } = xenToFile('reset');
    const runAndCompare = async () => (await run()).disks[0]!;
    try {
      expect((await runAndCompare()).mode).toBe('full');
      await write(1, 4);
      expect((await runAndCompare()).mode).toBe('tracked');
      // core calls a tracker that stops vouching a reset only after a tracked run
      const live = await pool.call<string>('VDI.get_by_uuid', disk.id);
      await pool.call('VDI.disable_cbt', live);
      await pool.call('VDI.enable_cbt', live);
      await write(3 * MiB + 1, 2);
      const second = await runAndCompare();
      expect([second.mode, second.reason?.code]).toEqual(['hash-diff', 'TRACKING_RESET']);
      await write(7 * MiB, 3);
      expect((await runAndCompare()).mode).toBe('tracked');
    } finally {
      await engine.close();
      await target.close();
    }
  });
});
