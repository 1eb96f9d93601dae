import { readdir } from 'node:fs/promises';
import type { Hypervisor, Replica, Snapshot } from '@replikit/core';
import { testPattern } from '@replikit/core/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createFileDriver, createFileVM, type FaultPoint, fileVmPaths, openGuestDisk } from '../src/index.js';
import { prepareCrashChild, runCrashChild } from './helpers/crash-runner.js';
import { checkAll, type KeptSnapshot, snapshotKinds } from './helpers/snapshot-model.js';
import { makeTempRoot, removeTempRoots } from './helpers/temp-root.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const SIZES = [2 * MiB + 3000, MiB];
const NO_REPLICA = { id: 'none', name: 'none', disks: [], created: false } as Replica;

interface Chain {
  root: string;
  hv: Hypervisor;
  live: Uint8Array[];
  kept: KeptSnapshot[];
  write(seed: number): Promise<void>;
}

/** A tracked VM with three snapshots: s1 full, s2 a diff on s1, s3 a diff on s2, and pending writes. */
async function prepareChain(): Promise<Chain> {
  const root = await makeTempRoot();
  const hv = createFileDriver({ root, reflink: false });
  await createFileVM(root, {
    name: 'vm',
    disks: SIZES.map((size, i) => ({ id: `d${i}`, size })),
    changeTracking: true,
  });
  const live = SIZES.map((size) => new Uint8Array(size));
  const write = async (seed: number): Promise<void> => {
    for (const [d, size] of SIZES.entries()) {
      const disk = await openGuestDisk(root, 'vm', `d${d}`);
      for (let i = 0; i < 4; i++) {
        const length = 1000 + ((seed * 7 + i * 13) % 90) * KiB;
        const offset = ((seed * 104_729 + i * 15_485_863) % (size - length)) | 0;
        const data = testPattern(seed * 100 + i, length);
        await disk.write(offset, data);
        live[d]!.set(data, offset);
      }
      await disk.close();
    }
  };
  const kept: KeptSnapshot[] = [];
  for (const seed of [1, 2, 3]) {
    await write(seed);
    kept.push({ snap: await hv.snapshot('vm', `s${seed}`), content: live.map((l) => l.slice()) });
  }
  expect(await snapshotKinds(root, 'vm', kept[2]!.snap)).toEqual([
    `diff:${kept[1]!.snap.id}`,
    `diff:${kept[1]!.snap.id}`,
  ]);
  await write(4);
  return { root, hv, live, kept, write };
}

/** After a crash: the next calls finish what was left, every snapshot reads right, tracking goes on. */
async function expectHealthy(c: Chain, hv: Hypervisor, kept: KeptSnapshot[]): Promise<void> {
  await checkAll(hv, kept);
  await c.write(5);
  const next = await hv.snapshot('vm', 'after');
  kept.push({ snap: next, content: c.live.map((l) => l.slice()) });
  // Tracking survived the crash: the new snapshot is a diff.
  for (const kind of await snapshotKinds(c.root, 'vm', next)) expect(kind).toMatch(/^diff:/);
  await checkAll(hv, kept);
  const leftovers = (await readdir(fileVmPaths(c.root, 'vm').snapshots)).filter((f) => f.startsWith('.'));
  expect(leftovers).toEqual([]);
}

describe('file driver: crash safety of snapshots and merges (SIGKILL of a child process)', () => {
  let child: string[];

  beforeAll(async () => {
    child = await prepareCrashChild();
  });
  afterAll(removeTempRoots);

  const kill = async (c: Chain, request: Record<string, unknown>, killAt: FaultPoint): Promise<Hypervisor> => {
    await c.hv.close();
    const outcome = await runCrashChild(child, { root: c.root, replica: NO_REPLICA, ...request, killAt });
    expect(outcome.signal, outcome.stderr).toBe('SIGKILL');
    return createFileDriver({ root: c.root, reflink: false }); // a new process would start like this
  };

  it.each<FaultPoint>(['snapshot:copied', 'snapshot:committed', 'snapshot:tracking-reset'])(
    'a snapshot killed at %s leaves no snapshot or a complete one',
    async (killAt) => {
      const c = await prepareChain();
      const hv = await kill(c, { op: 'snapshot', vm: 'vm', label: 's4' }, killAt);
      const listed = await hv.listSnapshots('vm');
      const kept = [...c.kept];
      const s4 = listed.find((s) => s.label === 's4');
      expect(s4 === undefined).toBe(killAt === 'snapshot:copied');
      if (s4) kept.push({ snap: s4, content: c.live.map((l) => l.slice()) });
      await expectHealthy(c, hv, kept);
    },
  );

  const mergePoints: FaultPoint[] = ['merge:journal-written', 'merge:copied', 'merge:switched', 'merge:dropped'];
  const cases: Array<[string, FaultPoint, number, boolean]> = [];
  for (const point of mergePoints) {
    cases.push(['s1 (full, s2 builds on it)', point, 0, false]);
    cases.push(['s2 (diff, s3 builds on it)', point, 1, false]);
  }
  cases.push(['s1 (full) with keepMetadata', 'merge:copied', 0, true]);
  cases.push(['s2 (diff) with keepMetadata', 'merge:switched', 1, true]);

  it.each(cases)('deleting %s killed at %s finishes on the next call', async (_what, killAt, index, keepMetadata) => {
    const c = await prepareChain();
    const doomed = c.kept[index]!.snap;
    const hv = await kill(c, { op: 'delete', snapshot: doomed, keepMetadata }, killAt);
    const listed = await hv.listSnapshots('vm');
    const left = listed.find((s: Snapshot) => s.id === doomed.id);
    if (keepMetadata) expect(left?.meta?.dataDeleted).toBe(true);
    else expect(left).toBeUndefined();
    await hv.deleteSnapshot(doomed, { keepMetadata }); // the engine's retry: nothing left to do
    await expectHealthy(
      c,
      hv,
      c.kept.filter((_, i) => i !== index),
    );
  });

  it('a guest writer killed before close makes the next snapshot a full copy, with every write in it', async () => {
    const c = await prepareChain();
    const hv = await kill(c, { op: 'guest-write', vm: 'vm' }, 'commit:applied'); // killAt unused: it kills itself
    for (let i = 0; i < 5; i++) c.live[0]!.fill(i + 1, i * 300_000 + 11, i * 300_000 + 11 + 9000);
    const s4 = await hv.snapshot('vm', 's4');
    expect(await snapshotKinds(c.root, 'vm', s4)).toEqual(['full', `diff:${c.kept[2]!.snap.id}`]);
    expect(await hv.changeTracker!.changes(s4.disks[0]!, c.kept[2]!.snap, s4)).toBeUndefined();
    await expectHealthy(c, hv, [...c.kept, { snap: s4, content: c.live.map((l) => l.slice()) }]);
  });

  it('deleting the newest diff killed after the bitmap took its blocks', async () => {
    const c = await prepareChain();
    const doomed = c.kept[2]!.snap;
    const hv = await kill(c, { op: 'delete', snapshot: doomed }, 'delete:tracking-folded');
    expect((await hv.listSnapshots('vm')).map((s) => s.id)).toContain(doomed.id);
    await checkAll(hv, c.kept);
    await hv.deleteSnapshot(doomed);
    await expectHealthy(c, hv, c.kept.slice(0, 2));
  });
});
