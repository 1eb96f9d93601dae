import { readdir } from 'node:fs/promises';
import type { Hypervisor, Replica, RestorePoint, VMInfo } from '@replikit/core';
import { compareBytes, readWholeDisk, testPattern } from '@replikit/core/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createFileDriver, type FaultPoint, fileVmPaths } from '../src/index.js';
import { prepareCrashChild, runCrashChild } from './helpers/crash-runner.js';
import { makeTempRoot, removeTempRoots } from './helpers/temp-root.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const SOURCE: VMInfo = { id: 'source', name: 'source', cpus: 2, memoryMiB: 256, powerState: 'running', disks: [] };

interface Scenario {
  root: string;
  hv: Hypervisor;
  replica: Replica;
  v1: RestorePoint;
  before: Uint8Array[];
  after: Uint8Array[];
}

/**
 * A replica with two disks and restore point v1, then a second version written through the overlay
 * (several records per disk, zero records included). `after` is the content of version 2.
 */
async function prepare(diskA = 2 * MiB): Promise<Scenario> {
  const root = await makeTempRoot();
  const hv = createFileDriver({ root });
  const replica = await hv.ensureReplica({
    name: 'replica',
    source: SOURCE,
    disks: [
      { sourceDiskId: 'a', size: diskA },
      { sourceDiskId: 'b', size: MiB },
    ],
  });
  const models = [new Uint8Array(diskA), new Uint8Array(MiB)];
  const write = async (i: number, ops: Array<[number, Uint8Array | number]>): Promise<void> => {
    const w = await hv.openWriter(replica, replica.disks[i]!);
    for (const [offset, what] of ops) {
      if (typeof what === 'number') {
        await w.writeZeroes(offset, what);
        models[i]!.fill(0, offset, offset + what);
      } else {
        await w.write(offset, what);
        models[i]!.set(what, offset);
      }
    }
    await w.close();
  };
  await write(0, [[0, testPattern(1, 512 * KiB)]]);
  await write(1, [[100 * KiB, testPattern(2, 200 * KiB)]]);
  const v1 = await hv.createRestorePoint(replica, 'v1');
  const before = models.map((m) => m.slice());
  const records: Array<[number, Uint8Array | number]> = [];
  for (let offset = 0; offset < diskA; offset += 256 * KiB) records.push([offset + 7, testPattern(offset, 64 * KiB)]);
  records.push([64 * KiB, 128 * KiB], [diskA - 3, testPattern(9, 3)]);
  await write(0, records);
  await write(1, [
    [200 * KiB, testPattern(10, 200 * KiB)],
    [150 * KiB, 20 * KiB],
  ]);
  return { root, hv, replica, v1, before, after: models };
}

async function contents(hv: Hypervisor, replica: Replica): Promise<Uint8Array[]> {
  return Promise.all(replica.disks.map((d) => readWholeDisk(hv, d)));
}

function whichVersion(actual: Uint8Array[], s: Scenario): 'v1' | 'v2' | 'mixed' {
  if (actual.every((a, i) => compareBytes(a, s.before[i]!) === 'equal')) return 'v1';
  if (actual.every((a, i) => compareBytes(a, s.after[i]!) === 'equal')) return 'v2';
  return 'mixed';
}

describe('file driver: crash safety (SIGKILL of a child process)', () => {
  let child: string[];

  beforeAll(async () => {
    child = await prepareCrashChild();
  });
  afterAll(removeTempRoots);

  const commitPoints: Array<[FaultPoint, number, 'v1' | 'v2']> = [
    ['commit:undo-written', 1, 'v1'],
    ['commit:marker-written', 1, 'v2'],
    ['commit:record-applied', 3, 'v2'],
    ['commit:applied', 1, 'v2'],
    ['commit:points-written', 1, 'v2'],
    ['commit:vm-written', 1, 'v2'],
    ['commit:overlays-deleted', 1, 'v2'],
  ];

  it.each(commitPoints)('a commit killed at %s (#%i) recovers to %s', async (killAt, occurrence, expected) => {
    const s = await prepare();
    await s.hv.close();
    const outcome = await runCrashChild(child, {
      root: s.root,
      replica: s.replica,
      op: 'commit',
      label: 'v2',
      killAt,
      occurrence,
    });
    expect(outcome.signal, outcome.stderr).toBe('SIGKILL');

    const hv = createFileDriver({ root: s.root }); // a new process would start like this
    expect(whichVersion(await contents(hv, s.replica), s)).toBe(expected);
    const labels = (await hv.listRestorePoints(s.replica)).map((p) => p.label);
    if (expected === 'v1') {
      expect(labels).toEqual(['v1']);
      expect(await hv.replicaMark(s.replica)).toBe('in-progress'); // the overlay is still pending
      await hv.createRestorePoint(s.replica, 'v2'); // the resumed run commits again
    } else {
      expect(labels).toEqual(['v1', 'v2']);
      expect(await hv.replicaMark(s.replica)).toBe('ready');
    }
    expect(whichVersion(await contents(hv, s.replica), s)).toBe('v2');
    const paths = fileVmPaths(s.root, s.replica.id);
    expect((await readdir(paths.dir)).filter((f) => f.endsWith('.overlay') || f.endsWith('.json'))).toEqual([
      'restore-points.json',
      'vm.json',
    ]);
    // The undo files survived the crash: going back to v1 still works.
    await hv.revertTo(s.replica, s.v1);
    expect(whichVersion(await contents(hv, s.replica), s)).toBe('v1');
  });

  const revertPoints: Array<[FaultPoint, number]> = [
    ['revert:marker-written', 1],
    ['revert:overlays-deleted', 1],
    ['revert:record-applied', 2],
    ['revert:undo-applied', 1],
    ['revert:points-written', 1],
  ];

  it.each(revertPoints)('a revert killed at %s (#%i) completes on reopen', async (killAt, occurrence) => {
    const s = await prepare();
    await s.hv.createRestorePoint(s.replica, 'v2');
    const w = await s.hv.openWriter(s.replica, s.replica.disks[1]!); // pending writes on top of v2
    await w.write(0, testPattern(77, 4096));
    await w.close();
    await s.hv.close();
    const outcome = await runCrashChild(child, {
      root: s.root,
      replica: s.replica,
      op: 'revert',
      point: s.v1,
      killAt,
      occurrence,
    });
    expect(outcome.signal, outcome.stderr).toBe('SIGKILL');

    const hv = createFileDriver({ root: s.root });
    expect(whichVersion(await contents(hv, s.replica), s)).toBe('v1');
    expect((await hv.listRestorePoints(s.replica)).map((p) => p.label)).toEqual(['v1']);
    expect(await hv.replicaMark(s.replica)).toBe('ready');
  });

  it('a commit killed at arbitrary instants leaves the old or the new version, never a mix', async () => {
    const seen = new Set<string>();
    for (const delay of [0, 15, 40, 90]) {
      const s = await prepare(8 * MiB);
      await s.hv.close();
      const outcome = await runCrashChild(
        child,
        { root: s.root, replica: s.replica, op: 'commit', label: 'v2' },
        delay,
      );
      const hv = createFileDriver({ root: s.root });
      const version = whichVersion(await contents(hv, s.replica), s);
      expect(version, `killed after ${delay} ms (${outcome.signal ?? outcome.code})`).not.toBe('mixed');
      seen.add(version);
      const labels = (await hv.listRestorePoints(s.replica)).map((p) => p.label);
      expect(labels).toEqual(version === 'v1' ? ['v1'] : ['v1', 'v2']);
    }
    expect(seen.size).toBeGreaterThan(0);
  });
});
