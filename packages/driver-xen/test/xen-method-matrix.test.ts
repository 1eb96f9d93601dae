import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DriverRegistry, FileStateStore, type Hypervisor, ReplicationEngine, type RunRecord } from '@replikit/core';
import { compareBytes, readWholeDisk, testPattern } from '@replikit/core/testing';
import { createFileDriver, createFileVM, fileDriver, writeGuestDisk } from '@replikit/driver-file';
import { localTransport } from '@replikit/transport';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type XenDriver, xenDriver } from '../src/index.js';
import { type AbdPool, startAbdPool } from './helpers/abd-pool.js';
import { PASSWORD_ENV } from './helpers/xen-pool.js';

/*
 * Every route a Xen job can take (xva, abd push, abd pull, qhybrid and cbt xen ► xen, qhybrid
 * xen ► file and file ► xen), at block sizes a user sets (4 KiB, 64 KiB, 1 MiB, 16 MiB), on a VM
 * of three disks whose sizes are not multiples of any of them (10 MiB + 4 KiB, 1 MiB + 512 B,
 * 3 MiB - 512 B: one smaller than a 1 MiB block, all smaller than a 16 MiB one): a full run,
 * guest writes at odd offsets and lengths (the last byte of each disk among them), an incremental
 * run; after each, the replica's disks have the source's sizes and equal its bytes.
 *
 * The whole matrix is 28 pairs of runs (about 6 minutes here); by default four of them (about
 * a minute): xva, abd pull and qhybrid both ways across the block sizes, as xen-block-sizes
 * already runs cbt, abd push and qhybrid xen ► xen at odd ones. REPLIKIT_XEN_MATRIX=all runs all.
 */

const KiB = 1024;
const MiB = 1024 * KiB;
const SIZES = [10 * MiB + 4 * KiB, MiB + 512, 3 * MiB - 512];
const ROUTES = ['xva', 'abd push', 'abd pull', 'qhybrid', 'cbt', 'qhybrid xen►file', 'qhybrid file►xen'] as const;
type Route = (typeof ROUTES)[number];
const BLOCK_SIZES = [4 * KiB, 64 * KiB, MiB, 16 * MiB];
const ALL = process.env.REPLIKIT_XEN_MATRIX === 'all';
const DEFAULT_CASES = new Set<string>([
  `xva ${MiB}`,
  `abd pull ${16 * MiB}`,
  `qhybrid xen►file ${16 * MiB}`,
  `qhybrid file►xen ${MiB}`,
]);

/** Guest writes of the second run: [disk, offset, length], straddling block edges of every size. */
const WRITES: Array<[number, number, number]> = [
  [0, 0, 1],
  [0, 64 * KiB - 3, 10],
  [0, MiB - 100, 4 * KiB + 200],
  [0, 10 * MiB - 1, 4 * KiB + 1],
  [1, MiB - 1, 513],
  [1, 4 * KiB - 1, 2],
  [2, 3 * MiB - 513, 1],
  [2, 5000, 70_000],
];

describe('every Xen route, every block size, disks not a multiple of the block', () => {
  let pool: AbdPool;
  let dir: string;
  let xen: XenDriver;
  let engine: ReplicationEngine;
  let jobs = 0;
  beforeAll(async () => {
    pool = await startAbdPool();
    dir = await mkdtemp(join(tmpdir(), 'rk-xen-matrix-'));
    xen = await pool.driver();
    engine = new ReplicationEngine({
      stateStore: new FileStateStore(join(dir, 'state')),
      drivers: new DriverRegistry().register(xenDriver).register(fileDriver),
      ruleSets: [],
      transport: localTransport(),
    });
  });
  afterAll(async () => {
    await engine?.close();
    await xen?.close();
    await pool?.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** A source VM of {@link SIZES} on the route's source side, with a guest writer. */
  async function makeSource(route: Route, name: string) {
    if (route === 'qhybrid file►xen') {
      const root = join(dir, `src-${jobs}`);
      await createFileVM(root, { name, disks: SIZES.map((size, i) => ({ id: `disk${i}`, size })) });
      return {
        spec: { driver: 'file', root, vm: name },
        write: (disk: number, offset: number, data: Uint8Array) =>
          writeGuestDisk(root, name, `disk${disk}`, offset, data),
      };
    }
    const vm = await pool.makeVM(name, SIZES);
    const disks = (await xen.getVM(vm.uuid)).disks;
    const abd = route.startsWith('abd') ? { abd: { ips: pool.ips } } : {};
    return {
      spec: { driver: 'xen', url: pool.sim.url, passwordEnv: PASSWORD_ENV, vm: name, ...abd },
      write: (disk: number, offset: number, data: Uint8Array) =>
        pool.writeGuest(vm.uuid, disks[disk]!.id, offset, data),
    };
  }

  for (const route of ROUTES) {
    for (const blockSize of BLOCK_SIZES) {
      if (!ALL && !DEFAULT_CASES.has(`${route} ${blockSize}`)) continue;
      it(`${route}, blockSize ${blockSize / KiB} KiB: full, guest writes, incremental; replica equal each time`, async () => {
        const n = ++jobs;
        const name = `matrix ${n}`;
        const model = SIZES.map((size) => new Uint8Array(size));
        const source = await makeSource(route, name);
        const write = async (disk: number, offset: number, data: Uint8Array) => {
          await source.write(disk, offset, data);
          model[disk]!.set(data, offset);
        };
        await write(0, 4095, testPattern(n, 300_000));
        await write(1, 7, testPattern(n + 1, 20_000));
        await write(2, 3 * MiB - 4096, testPattern(n + 2, 4096 - 512));

        const toFile = route === 'qhybrid xen►file';
        const replicas = join(dir, `replicas-${n}`);
        const target = toFile
          ? { driver: 'file', root: replicas, replicaName: `matrix-${n}` }
          : {
              driver: 'xen',
              url: pool.sim.url,
              passwordEnv: PASSWORD_ENV,
              abd: { ips: pool.ips },
              replicaName: `matrix-${n}`,
            };
        const job = {
          name: `matrix-${n}`,
          source: source.spec,
          target,
          method: route.split(' ')[0]!,
          blockSize,
          ...(route === 'abd pull' ? { options: { direction: 'pull' as const } } : {}),
        };
        const fileTarget = toFile ? createFileDriver({ root: replicas }) : undefined;
        const targetHv: Hypervisor = fileTarget ?? xen;
        const check = async (record: RunRecord) => {
          expect(record.outcome, JSON.stringify(record.error)).toBe('completed');
          const info = await targetHv.getVM(record.replica!.id);
          expect(info.disks.map((d) => d.size)).toEqual(SIZES);
          for (const [i, disk] of info.disks.entries()) {
            expect(compareBytes(await readWholeDisk(targetHv, disk), model[i]!), `disk ${i}`).toBe('equal');
          }
          expect(await pool.pluggedIntoAppliances()).toEqual([]);
        };
        try {
          const first = await engine.run(job);
          await check(first);
          for (const [disk, offset, length] of WRITES) await write(disk, offset, testPattern(n * 100 + offset, length));
          const second = await engine.run(job);
          await check(second);
          if (route !== 'xva') expect(second.disks.map((d) => d.mode)).not.toContain('full');
        } finally {
          await fileTarget?.close();
        }
      });
    }
  }
});
