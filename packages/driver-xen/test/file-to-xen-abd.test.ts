import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DriverRegistry, FileStateStore, ReplicationEngine, type RunRecord } from '@replikit/core';
import { compareBytes, readWholeDisk, testPattern } from '@replikit/core/testing';
import { createFileVM, fileDriver, writeGuestDisk } from '@replikit/driver-file';
import { localTransport } from '@replikit/transport';
import { afterEach, describe, expect, it } from 'vitest';
import type { XenDriver } from '../src/index.js';
import { xenDriver } from '../src/index.js';
import { type AbdPool, startAbdPool } from './helpers/abd-pool.js';
import { PASSWORD_ENV } from './helpers/xen-pool.js';

/*
 * Issue 17, acceptance: file ► Xen with Q-Hybrid, the Xen target writing through its appliance
 * (an `abd` section, as rule xen-target-needs-abd asks): a full run, 1 % of the file VM's 64 KiB
 * blocks written by its guest, an incremental run; after each the replica equals the source byte
 * for byte, nothing is plugged and the appliance is halted.
 */

const MiB = 1024 * 1024;
const BLOCK = 64 * 1024;

describe('file ► xen, Q-Hybrid, through the target appliance', () => {
  let pool: AbdPool;
  let dir: string;
  let xen: XenDriver;
  let engine: ReplicationEngine | undefined;
  afterEach(async () => {
    await engine?.close();
    await xen?.close();
    await pool?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('full, 1 % guest writes, incremental: the replica equals the file VM after each run', async () => {
    pool = await startAbdPool();
    dir = await mkdtemp(join(tmpdir(), 'rk-file-xen-'));
    xen = await pool.driver();
    const root = join(dir, 'vms');
    const sizes = [16 * MiB, 3 * MiB + 512];
    await createFileVM(root, { name: 'guest', disks: sizes.map((size, i) => ({ id: `disk${i}`, size })) });
    const model = sizes.map((size) => new Uint8Array(size));
    const write = async (disk: number, offset: number, data: Uint8Array) => {
      await writeGuestDisk(root, 'guest', `disk${disk}`, offset, data);
      model[disk]!.set(data, offset);
    };
    await write(0, 4095, testPattern(1, 300_000));
    await write(1, sizes[1]! - 519, testPattern(2, 519));
    engine = new ReplicationEngine({
      stateStore: new FileStateStore(join(dir, 'state')),
      drivers: new DriverRegistry().register(xenDriver).register(fileDriver),
      transport: localTransport(),
    });
    const job = {
      name: 'file-to-xen',
      source: { driver: 'file', root, vm: 'guest' },
      target: {
        driver: 'xen',
        url: pool.sim.url,
        passwordEnv: PASSWORD_ENV,
        abd: { ips: pool.ips },
        replicaName: 'file-to-xen',
      },
      method: 'qhybrid',
    };
    const check = async (record: RunRecord) => {
      expect(record.outcome, JSON.stringify(record.error)).toBe('completed');
      const info = await xen.getVM(record.replica!.id);
      expect(info.disks.map((d) => d.size)).toEqual(sizes);
      for (const [i, disk] of info.disks.entries()) {
        expect(compareBytes(await readWholeDisk(xen, disk), model[i]!)).toBe('equal');
      }
      expect(await pool.applianceVbds()).toEqual([]);
      expect((await pool.appliances()).map((a) => a.power)).toEqual(['Halted']);
    };

    const first = await engine.run(job);
    expect(first.disks.map((d) => d.mode)).toEqual(['full', 'full']);
    await check(first);

    for (const [i, size] of sizes.entries()) {
      const blocks = Math.ceil(size / BLOCK);
      const count = Math.max(2, Math.floor(blocks / 100));
      for (let n = 0; n < count; n++) {
        const block = (n * 7919 + i * 104_729) % blocks;
        const length = Math.min(BLOCK, size - block * BLOCK);
        await write(i, block * BLOCK, testPattern(100 + n, length));
      }
    }
    const second = await engine.run(job);
    expect(second.disks.map((d) => d.mode)).not.toContain('full');
    await check(second);
  });
});
