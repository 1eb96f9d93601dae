import { open, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Extent } from '@replikit/core';
import {
  checkChangeTrackerModel,
  compareBytes,
  readWholeDisk,
  runDriverConformance,
  testPattern,
} from '@replikit/core/testing';
import { localTransport } from '@replikit/transport';
import { afterAll, describe, expect, it, vi } from 'vitest';
import {
  ALLOCATION_GRANULE,
  createFileDriver,
  createFileVM,
  fileVmPaths,
  openGuestDisk,
  writeGuestDisk,
} from '../src/index.js';
import { checkAll, collect, type KeptSnapshot, snapshotKinds, writeOutside } from './helpers/snapshot-model.js';
import { createTempDriver, driverRoots, fileFixtures, makeTempRoot, removeTempRoots } from './helpers/temp-root.js';

// The whole conformance suite again, on source VMs that track their changes.
runDriverConformance({
  name: 'file (change tracking)',
  create: () => createTempDriver(),
  trackedVMs: true,
  transport: localTransport(),
  fixtures: {
    ...fileFixtures,
    createSourceVM: (hv, spec) =>
      createFileVM(driverRoots.get(hv)!, { name: spec.name, disks: spec.disks, changeTracking: true }),
  },
});

// The suite's tracker check passes when a tracker answers `undefined`; make sure this one answers.
describe('file driver: the change-tracker model check is not vacuous', () => {
  afterAll(removeTempRoots);

  it('answers every snapshot pair the model check asks about', async () => {
    const hv = await createTempDriver();
    const fixtures = {
      ...fileFixtures,
      createSourceVM: (d: typeof hv, spec: { name: string; disks: Array<{ id: string; size: number }> }) =>
        createFileVM(driverRoots.get(d)!, { name: spec.name, disks: spec.disks, changeTracking: true }),
    };
    try {
      const { answered } = await checkChangeTrackerModel({ hv, fixtures, name: 'model', size: 4 * 1024 * 1024 });
      expect(answered).toBeGreaterThan(0); // 6 of the 9 pairs today; the rest fall back to hash-diff
    } finally {
      await hv.close();
    }
  });
});

const KiB = 1024;
const MiB = 1024 * KiB;
const G = ALLOCATION_GRANULE;

describe('file driver: change tracking and differencing snapshots', () => {
  afterAll(removeTempRoots);

  it('snapshots only what changed, reports it, and merges on delete (the engine pattern)', async () => {
    const root = await makeTempRoot();
    const hv = createFileDriver({ root, reflink: false });
    const size = 4 * MiB + 5000;
    await createFileVM(root, { name: 'vm', disks: [{ id: 'd0', size }], changeTracking: true });
    const model = new Uint8Array(size);
    const write = async (offset: number, data: Uint8Array) => {
      await writeGuestDisk(root, 'vm', 'd0', offset, data);
      model.set(data, offset);
    };
    await write(0, testPattern(1, 300 * KiB));
    const s1 = await hv.snapshot('vm', 'r1');
    expect(await snapshotKinds(root, 'vm', s1)).toEqual(['full']);
    const m1 = model.slice();
    await write(2 * MiB + 10, testPattern(2, 100));
    await write(size - 3, testPattern(3, 3));
    const s2 = await hv.snapshot('vm', 'r2');
    expect(await snapshotKinds(root, 'vm', s2)).toEqual([`diff:${s1.id}`]);
    const m2 = model.slice();
    expect(await collect(await hv.changeTracker!.changes(s2.disks[0]!, s1, s2))).toEqual([
      { offset: 2 * MiB, length: G },
      { offset: Math.floor(size / G) * G, length: size - Math.floor(size / G) * G },
    ]);
    expect(await collect(await hv.changeTracker!.changes(s2.disks[0]!, s2, s2))).toEqual([]);
    expect(await hv.changeTracker!.changes(s1.disks[0]!, s2, s1)).toBeUndefined();
    expect(compareBytes(await readWholeDisk(hv, s2.disks[0]!), m2)).toBe('equal');
    const reader = await hv.openReader(s2.disks[0]!);
    const allocated: Extent[] = [];
    for await (const e of reader.allocated()) allocated.push(e);
    await reader.close();
    expect(allocated[0]).toEqual({ offset: 0, length: 320 * KiB });
    // The engine drops the previous base after a good run: s1 merges into s2.
    await hv.deleteSnapshot(s1);
    expect(await snapshotKinds(root, 'vm', s2)).toEqual(['full']);
    expect(compareBytes(await readWholeDisk(hv, s2.disks[0]!), m2)).toBe('equal');
    expect(m1).not.toEqual(m2);
    await write(MiB, testPattern(4, 10));
    const s3 = await hv.snapshot('vm', 'r3');
    expect(await snapshotKinds(root, 'vm', s3)).toEqual([`diff:${s2.id}`]);
    expect(await collect(await hv.changeTracker!.changes(s3.disks[0]!, s2, s3))).toEqual([{ offset: MiB, length: G }]);
    // A failed run drops its own (newest) snapshot: its changes go back into the bitmap.
    await hv.deleteSnapshot(s3);
    await write(3 * MiB, testPattern(5, 10));
    const s4 = await hv.snapshot('vm', 'r4');
    expect(await snapshotKinds(root, 'vm', s4)).toEqual([`diff:${s2.id}`]);
    expect(await collect(await hv.changeTracker!.changes(s4.disks[0]!, s2, s4))).toEqual([
      { offset: MiB, length: G },
      { offset: 3 * MiB, length: G },
    ]);
    expect(compareBytes(await readWholeDisk(hv, s4.disks[0]!), model)).toBe('equal');
    expect(compareBytes(await readWholeDisk(hv, s2.disks[0]!), m2)).toBe('equal');
  });

  it('a write behind the driver is noticed: full copy, changes() undefined', async () => {
    const root = await makeTempRoot();
    const hv = createFileDriver({ root, reflink: false });
    await createFileVM(root, { name: 'vm', disks: [{ id: 'd0', size: 2 * MiB }], changeTracking: true });
    await writeGuestDisk(root, 'vm', 'd0', 0, testPattern(1, 1000));
    const s1 = await hv.snapshot('vm', 'a');
    await writeGuestDisk(root, 'vm', 'd0', 5000, testPattern(2, 1000));
    await writeOutside(root, 'vm', 'd0.raw', MiB, testPattern(3, 1000)); // at once: same clock tick
    const s2 = await hv.snapshot('vm', 'b');
    expect(await snapshotKinds(root, 'vm', s2)).toEqual(['full']);
    expect(await hv.changeTracker!.changes(s2.disks[0]!, s1, s2)).toBeUndefined();
    const data = await readWholeDisk(hv, s2.disks[0]!);
    expect(compareBytes(data.subarray(MiB, MiB + 1000), testPattern(3, 1000))).toBe('equal');
    // Tracking starts again from s2.
    await writeGuestDisk(root, 'vm', 'd0', 7, testPattern(4, 1));
    const s3 = await hv.snapshot('vm', 'c');
    expect(await snapshotKinds(root, 'vm', s3)).toEqual([`diff:${s2.id}`]);
    // Written behind the driver, then a tracked write (which must not adopt the foreign change).
    await writeOutside(root, 'vm', 'd0.raw', 3 * G, testPattern(5, 10));
    await writeGuestDisk(root, 'vm', 'd0', 0, testPattern(6, 10));
    const s4 = await hv.snapshot('vm', 'd');
    expect(await snapshotKinds(root, 'vm', s4)).toEqual(['full']);
  });

  it('a write behind the driver right after creation or a snapshot is noticed', async () => {
    const root = await makeTempRoot();
    const hv = createFileDriver({ root, reflink: false });
    await createFileVM(root, { name: 'vm', disks: [{ id: 'd0', size: MiB }], changeTracking: true });
    await writeOutside(root, 'vm', 'd0.raw', 0, testPattern(1, 10)); // the same clock tick, likely
    const s1 = await hv.snapshot('vm', 'a');
    await writeOutside(root, 'vm', 'd0.raw', G, testPattern(2, 10));
    const s2 = await hv.snapshot('vm', 'b');
    expect(await snapshotKinds(root, 'vm', s2)).toEqual(['full']);
    expect(await hv.changeTracker!.changes(s2.disks[0]!, s1, s2)).toBeUndefined();
    expect(compareBytes((await readWholeDisk(hv, s2.disks[0]!)).subarray(G, G + 10), testPattern(2, 10))).toBe('equal');
  });

  it('readers: a full base cannot be merged away while read; a successor read during the merge stays right', async () => {
    const root = await makeTempRoot();
    const hv = createFileDriver({ root, reflink: false });
    await createFileVM(root, { name: 'vm', disks: [{ id: 'd0', size: MiB }], changeTracking: true });
    await writeGuestDisk(root, 'vm', 'd0', 0, testPattern(1, 2 * G));
    const s1 = await hv.snapshot('vm', 'a');
    const disk = await openGuestDisk(root, 'vm', 'd0');
    await Promise.all([disk.write(G, testPattern(2, 10)), disk.write(3 * G, testPattern(3, 10))]);
    await disk.close();
    const s2 = await hv.snapshot('vm', 'b');
    const expected = await readWholeDisk(hv, s2.disks[0]!);
    const r1 = await hv.openReader(s1.disks[0]!);
    await expect(hv.deleteSnapshot(s1)).rejects.toMatchObject({ code: 'E_CONFLICT' });
    await r1.close();
    const r2 = await hv.openReader(s2.disks[0]!);
    await hv.deleteSnapshot(s1);
    expect(compareBytes(await r2.read(0, MiB), expected)).toBe('equal');
    await r2.close();
    expect(compareBytes(await readWholeDisk(hv, s2.disks[0]!), expected)).toBe('equal');
    expect(await snapshotKinds(root, 'vm', s2)).toEqual(['full']);
  });

  it('a corrupt or missing bitmap is discarded: full copy, then tracking again', async () => {
    const root = await makeTempRoot();
    const hv = createFileDriver({ root, reflink: false });
    await createFileVM(root, { name: 'vm', disks: [{ id: 'd0', size: MiB }], changeTracking: true });
    const s1 = await hv.snapshot('vm', 'a');
    await writeGuestDisk(root, 'vm', 'd0', 0, testPattern(1, 10));
    const cbt = join(fileVmPaths(root, 'vm').dir, 'd0.raw.cbt');
    const bytes = await readFile(cbt);
    bytes[512]! ^= 0xff; // flipped bits in the bitmap
    await writeFile(cbt, bytes);
    const s2 = await hv.snapshot('vm', 'b');
    expect(await snapshotKinds(root, 'vm', s2)).toEqual(['full']);
    expect(await hv.changeTracker!.changes(s2.disks[0]!, s1, s2)).toBeUndefined();
    await writeFile(cbt, 'garbage');
    await writeGuestDisk(root, 'vm', 'd0', 0, testPattern(2, 10)); // drops the garbage
    const s3 = await hv.snapshot('vm', 'c');
    expect(await snapshotKinds(root, 'vm', s3)).toEqual(['full']);
    await writeGuestDisk(root, 'vm', 'd0', 0, testPattern(3, 10));
    const s4 = await hv.snapshot('vm', 'd');
    expect(await snapshotKinds(root, 'vm', s4)).toEqual([`diff:${s3.id}`]);
    expect(compareBytes((await readWholeDisk(hv, s4.disks[0]!)).subarray(0, 10), testPattern(3, 10))).toBe('equal');
  });

  it('a VM without tracking snapshots as before and has no changes', async () => {
    const root = await makeTempRoot();
    const hv = createFileDriver({ root, reflink: false });
    await createFileVM(root, { name: 'vm', disks: [{ id: 'd0', size: MiB }] });
    await writeGuestDisk(root, 'vm', 'd0', 0, testPattern(1, 10));
    const s1 = await hv.snapshot('vm', 'a');
    await writeGuestDisk(root, 'vm', 'd0', 0, testPattern(2, 10));
    const s2 = await hv.snapshot('vm', 'b');
    expect(await snapshotKinds(root, 'vm', s2)).toEqual(['full']);
    expect((await readdir(fileVmPaths(root, 'vm').dir)).filter((f) => f.endsWith('.cbt'))).toEqual([]);
    const meta = JSON.parse(await readFile(join(fileVmPaths(root, 'vm').snapshots, s2.id, 'snapshot.json'), 'utf8'));
    expect(meta.version).toBe(1);
    expect(await hv.changeTracker!.changes(s2.disks[0]!, s1, s2)).toBeUndefined();
    await hv.deleteSnapshot(s1);
    expect(compareBytes((await readWholeDisk(hv, s2.disks[0]!)).subarray(0, 10), testPattern(2, 10))).toBe('equal');
  });

  it('keepMetadata merges the data away and keeps the snapshot listed', async () => {
    const root = await makeTempRoot();
    const hv = createFileDriver({ root, reflink: false });
    await createFileVM(root, { name: 'vm', disks: [{ id: 'd0', size: MiB }], changeTracking: true });
    await writeGuestDisk(root, 'vm', 'd0', 0, testPattern(1, 10));
    const s1 = await hv.snapshot('vm', 'a');
    await writeGuestDisk(root, 'vm', 'd0', G, testPattern(2, 10));
    const s2 = await hv.snapshot('vm', 'b');
    await hv.deleteSnapshot(s1, { keepMetadata: true });
    const listed = await hv.listSnapshots('vm');
    expect(listed.map((s) => [s.id, s.meta?.dataDeleted === true])).toEqual([
      [s1.id, true],
      [s2.id, false],
    ]);
    await expect(hv.openReader(s1.disks[0]!)).rejects.toMatchObject({ code: 'E_NOT_FOUND' });
    const data = await readWholeDisk(hv, s2.disks[0]!);
    expect(compareBytes(data.subarray(0, 10), testPattern(1, 10))).toBe('equal');
    expect(compareBytes(data.subarray(G, G + 10), testPattern(2, 10))).toBe('equal');
    await writeGuestDisk(root, 'vm', 'd0', 2 * G, testPattern(3, 10));
    const s3 = await hv.snapshot('vm', 'c');
    expect(await snapshotKinds(root, 'vm', s3)).toEqual([`diff:${s2.id}`]);
  });

  it('1000 small guest writes through one handle make no durable write each (no fsync per write)', async () => {
    const root = await makeTempRoot();
    await createFileVM(root, { name: 'vm', disks: [{ id: 'd0', size: 256 * MiB }], changeTracking: true });
    // What made each write slow was making it durable: count fsyncs instead of timing the loop.
    const probe = await open(join(root, 'probe'), 'w');
    const handle = Object.getPrototypeOf(probe) as { sync: () => Promise<void>; datasync: () => Promise<void> };
    await probe.close();
    const syncs = vi.spyOn(handle, 'sync');
    const datasyncs = vi.spyOn(handle, 'datasync');
    const disk = await openGuestDisk(root, 'vm', 'd0');
    expect(disk.tracking).toBe(true);
    const opened = syncs.mock.calls.length + datasyncs.mock.calls.length;
    try {
      for (let i = 0; i < 1000; i++) await disk.write((i * 7919 * 4096) % (256 * MiB - 4096), testPattern(i, 4096));
      expect(syncs.mock.calls.length + datasyncs.mock.calls.length - opened).toBe(0);
    } finally {
      await disk.close();
      syncs.mockRestore();
      datasyncs.mockRestore();
    }
  });

  it('model: guest writes, outside writes, snapshots and deletions in any order read back exactly', async () => {
    const sizes = [MiB + 5000, 640 * KiB];
    // A seeded generator (mulberry32) rather than fast-check, which only @replikit/formats depends on.
    for (let run = 0; run < 40; run++) {
      const seed = 20261125 + run;
      let state = seed;
      const random = (n: number): number => {
        state = (state + 0x6d2b79f5) | 0;
        let t = Math.imul(state ^ (state >>> 15), 1 | state);
        t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
        return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * n);
      };
      const root = await makeTempRoot();
      const vm = `vm${run}`;
      const hv = createFileDriver({ root, reflink: false });
      await createFileVM(root, {
        name: vm,
        disks: sizes.map((size, i) => ({ id: `d${i}`, size })),
        changeTracking: true,
      });
      const live = sizes.map((size) => new Uint8Array(size));
      const kept: KeptSnapshot[] = [];
      const log: string[] = [];
      const steps = 1 + random(30);
      for (let step = 0; step < steps; step++) {
        const dice = random(11);
        if (dice < 6) {
          const d = random(2);
          const size = sizes[d]!;
          const length = 1 + random(dice === 5 ? 10 * KiB : 150 * KiB);
          const offset = random(size - length + 1);
          const data = testPattern(random(1e9), length);
          if (dice === 5) {
            log.push(`outside d${d} ${offset}+${length}`);
            await writeOutside(root, vm, `d${d}.raw`, offset, data);
          } else if (dice % 2 === 0) {
            log.push(`batch d${d} ${offset}+${length}`);
            const handle = await openGuestDisk(root, vm, `d${d}`);
            await handle.write(offset, data.subarray(0, length >> 1));
            await handle.write(offset + (length >> 1), data.subarray(length >> 1));
            await handle.close();
          } else {
            log.push(`write d${d} ${offset}+${length}`);
            await writeGuestDisk(root, vm, `d${d}`, offset, data);
          }
          live[d]!.set(data, offset);
        } else if (dice < 9) {
          kept.push({ snap: await hv.snapshot(vm, 'x'), content: live.map((l) => l.slice()) });
          log.push(`snapshot ${kept.at(-1)!.snap.id}`);
        } else if (kept.length > 0) {
          const [victim] = kept.splice(random(kept.length), 1);
          const keepMetadata = dice === 10;
          log.push(`delete ${victim!.snap.id}${keepMetadata ? ' keepMetadata' : ''}`);
          await hv.deleteSnapshot(victim!.snap, { keepMetadata });
        }
      }
      try {
        await checkAll(hv, kept);
      } catch (error) {
        throw new Error(
          `model run ${run} (seed ${seed}) failed after:\n${log.join('\n')}\n${(error as Error).message}`,
        );
      }
    }
  });
});
