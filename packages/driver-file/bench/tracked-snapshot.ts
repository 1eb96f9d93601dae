/**
 * Times the file driver's snapshots with and without change tracking on a 2 GiB image with 1 % of
 * its 64 KiB granules dirty, and the deletion (merge) of the base snapshot. Usage:
 *
 *   flock /tmp/replikit-bench.lock node --conditions=@replikit/source --import tsx \
 *     packages/driver-file/bench/tracked-snapshot.ts [sizeGiB]
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ALLOCATION_GRANULE, createFileDriver, createFileVM, fileVmPaths, openGuestDisk } from '../src/index.js';

const GiB = 1024 ** 3;
const size = Number(process.argv[2] ?? 2) * GiB;
const granules = size / ALLOCATION_GRANULE;
const dirtyCount = Math.round(granules * 0.01);

async function time<T>(what: string, fn: () => Promise<T>): Promise<T> {
  const started = performance.now();
  const result = await fn();
  console.log(`${what.padEnd(58)} ${(performance.now() - started).toFixed(1).padStart(9)} ms`);
  return result;
}

async function fill(path: string): Promise<void> {
  const fh = await open(path, 'r+');
  const chunk = randomBytes(8 * 1024 * 1024);
  for (let at = 0; at < size; at += chunk.length) await fh.write(chunk, 0, chunk.length, at);
  await fh.sync();
  await fh.close();
}

async function dirtyOnePercent(root: string, vm: string): Promise<void> {
  const picked = new Set<number>();
  while (picked.size < dirtyCount) picked.add(Math.floor(Math.random() * granules));
  const disk = await openGuestDisk(root, vm, 'd0');
  try {
    for (const g of picked) await disk.write(g * ALLOCATION_GRANULE + 512, randomBytes(4096));
  } finally {
    await disk.close();
  }
}

const root = await mkdtemp(join(tmpdir(), 'rk-cbt-bench-'));
try {
  console.log(`image ${size / GiB} GiB, ${granules} granules, ${dirtyCount} dirty (1 %)`);
  const hv = createFileDriver({ root, reflink: false });
  for (const tracking of [false, true]) {
    const vm = tracking ? 'tracked' : 'plain';
    await createFileVM(root, { name: vm, disks: [{ id: 'd0', size }], changeTracking: tracking });
    await fill(join(fileVmPaths(root, vm).dir, 'd0.raw'));
    const s1 = await time(`${vm}: first snapshot (full copy)`, () => hv.snapshot(vm, 'r1'));
    await time(`${vm}: ${dirtyCount} guest writes of 4 KiB (one handle)`, () => dirtyOnePercent(root, vm));
    const s2 = await time(`${vm}: snapshot with 1 % dirty`, () => hv.snapshot(vm, 'r2'));
    const changes = await time(`${vm}: changes(r1, r2)`, async () => {
      const extents = await hv.changeTracker!.changes(s2.disks[0]!, s1, s2);
      if (!extents) return undefined;
      let n = 0;
      for await (const e of extents) n += e.length;
      return n;
    });
    console.log(
      `${vm}: changes(r1, r2) = ${changes === undefined ? 'undefined' : `${changes / ALLOCATION_GRANULE} granules`}`,
    );
    for (const [name, snap] of [
      ['r1', s1],
      ['r2', s2],
    ] as const) {
      await time(`${vm}: read all of ${name} (readInto, 1 MiB)`, async () => {
        const reader = await hv.openReader(snap.disks[0]!);
        const buffer = new Uint8Array(1024 * 1024);
        for (let at = 0; at < size; at += buffer.length) await reader.readInto!(at, buffer);
        await reader.close();
      });
    }
    await time(`${vm}: delete r1 (the engine's cleanup after a good run)`, () => hv.deleteSnapshot(s1));
    await dirtyOnePercent(root, vm);
    const s3 = await time(`${vm}: next snapshot with 1 % dirty`, () => hv.snapshot(vm, 'r3'));
    await time(`${vm}: delete r2`, () => hv.deleteSnapshot(s2));
    await time(`${vm}: delete r3 (newest: a failed run's cleanup)`, () => hv.deleteSnapshot(s3));
    await rm(fileVmPaths(root, vm).dir, { recursive: true, force: true });
  }
} finally {
  await rm(root, { recursive: true, force: true });
}
