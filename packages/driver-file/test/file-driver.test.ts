import { spawnSync } from 'node:child_process';
import { readSync } from 'node:fs';
import { appendFile, mkdir, readdir, readFile, stat, symlink, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { DiskReader, Hypervisor, VMInfo } from '@replikit/core';
import { compareBytes, readWholeDisk, runDriverConformance, testPattern } from '@replikit/core/testing';
import { localTransport } from '@replikit/transport';
import { afterAll, describe, expect, it } from 'vitest';
import {
  ALLOCATION_GRANULE,
  createFileDriver,
  createFileVM,
  FILE_DRIVER_CAPABILITIES,
  fileVmPaths,
  handOffRemovals,
  overlayPath,
  settleDiscards,
  writeGuestDisk,
} from '../src/index.js';
import { createTempDriver, fileFixtures, makeTempRoot, removeTempRoots } from './helpers/temp-root.js';

runDriverConformance({
  name: 'file',
  create: () => createTempDriver(),
  fixtures: fileFixtures,
  transport: localTransport(),
});

const KiB = 1024;
const MiB = 1024 * KiB;
const SOURCE: VMInfo = { id: 'source', name: 'source', cpus: 2, memoryMiB: 256, powerState: 'running', disks: [] };

async function freshDriver(): Promise<{ root: string; hv: Hypervisor }> {
  const root = await makeTempRoot();
  return { root, hv: createFileDriver({ root }) };
}

async function replicaWithPoint(hv: Hypervisor, size = 2 * MiB) {
  const replica = await hv.ensureReplica({ name: 'rep', source: SOURCE, disks: [{ sourceDiskId: 'd0', size }] });
  const disk = replica.disks[0]!;
  const model = new Uint8Array(size);
  const w = await hv.openWriter(replica, disk);
  await w.write(0, testPattern(1, 100 * KiB));
  model.set(testPattern(1, 100 * KiB), 0);
  await w.close();
  const v1 = await hv.createRestorePoint(replica, 'v1');
  return { replica, disk, model, v1 };
}

describe('file driver', () => {
  afterAll(removeTempRoots);

  it('declares its capabilities', () => {
    expect(FILE_DRIVER_CAPABILITIES).toEqual({
      methods: ['qhybrid'],
      canBeSource: true,
      canBeTarget: true,
      changeTracking: true,
      formats: ['raw'],
      restorePoints: true,
      failover: true,
      fencing: true,
    });
  });

  it('cuts a torn overlay tail on reopen and keeps appending after it', async () => {
    const { root, hv } = await freshDriver();
    const { replica, disk, model } = await replicaWithPoint(hv);
    let w = await hv.openWriter(replica, disk);
    for (const [i, offset] of [4096, 300 * KiB, MiB + 5].entries()) {
      await w.write(offset, testPattern(10 + i, 5000));
      model.set(testPattern(10 + i, 5000), offset);
    }
    await w.close();
    const overlay = overlayPath(fileVmPaths(root, replica.id).dir, 'd0.raw');
    const valid = (await stat(overlay)).size;
    // What a crash mid-append leaves: a record header announcing 64 KiB, then only part of it.
    const header = Buffer.alloc(32);
    header.write('RKOV', 0, 'latin1');
    header.writeUInt32LE(1, 4);
    header.writeBigUInt64LE(0n, 8);
    header.writeBigUInt64LE(65536n, 16);
    await appendFile(overlay, Buffer.concat([header, testPattern(99, 1000)]));
    w = await hv.openWriter(replica, disk);
    expect((await stat(overlay)).size).toBe(valid);
    await w.write(MiB + 100, testPattern(20, 300));
    model.set(testPattern(20, 300), MiB + 100);
    await w.close();
    // Garbage that is not even a header is cut as well.
    await appendFile(overlay, Buffer.from('garbage'));
    await hv.createRestorePoint(replica, 'v2');
    expect(compareBytes(await readWholeDisk(hv, disk), model)).toBe('equal');
  });

  it('keeps at most `retention` points and only the undo files it can still use', async () => {
    const { root, hv } = await freshDriver();
    const { replica, disk, model } = await replicaWithPoint(hv);
    const versions: Uint8Array[] = [];
    for (let i = 2; i <= 5; i++) {
      const w = await hv.openWriter(replica, disk);
      await w.write(i * 64 * KiB, testPattern(i, 64 * KiB));
      model.set(testPattern(i, 64 * KiB), i * 64 * KiB);
      await w.close();
      await hv.createRestorePoint(replica, `v${i}`, { retention: 3 });
      versions[i] = model.slice();
    }
    const points = await hv.listRestorePoints(replica);
    expect(points.map((p) => p.label)).toEqual(['v3', 'v4', 'v5']);
    const undo = await readdir(join(fileVmPaths(root, replica.id).dir, 'undo'));
    expect(undo.sort()).toEqual([points[1]!.id, points[2]!.id].sort()); // the oldest point needs no undo
    await hv.revertTo(replica, points[0]!);
    expect(compareBytes(await readWholeDisk(hv, disk), versions[3]!)).toBe('equal');
    expect(await readdir(join(fileVmPaths(root, replica.id).dir, 'undo'))).toEqual([]);
  });

  it('refuses hostile names with E_INPUT', async () => {
    const { root, hv } = await freshDriver();
    await createFileVM(root, { name: 'vm', disks: [{ id: 'd0', size: MiB }] });
    const vm = await hv.getVM('vm');
    for (const name of ['..', '../etc', 'a/b', 'a\\b', '.hidden', 'nul\0byte', '', 'x'.repeat(300)]) {
      await expect(hv.getVM(name), name).rejects.toMatchObject({ code: 'E_INPUT' });
      await expect(createFileVM(root, { name, disks: [] }), name).rejects.toMatchObject({ code: 'E_INPUT' });
      await expect(hv.ensureReplica({ name, source: SOURCE, disks: [] }), name).rejects.toMatchObject({
        code: 'E_INPUT',
      });
      await expect(hv.openReader({ ...vm.disks[0]!, vmId: name }), name).rejects.toMatchObject({ code: 'E_INPUT' });
      await expect(hv.openReader({ ...vm.disks[0]!, snapshotId: name }), name).rejects.toMatchObject({
        code: 'E_INPUT',
      });
      await expect(hv.power(name, 'start'), name).rejects.toMatchObject({ code: 'E_INPUT' });
    }
    await expect(createFileVM(root, { name: 'ok', disks: [{ id: '../escape', size: 1 }] })).rejects.toMatchObject({
      code: 'E_INPUT',
    });
    await expect(
      hv.ensureReplica({ name: 'r', source: SOURCE, disks: [{ sourceDiskId: 'x/../../y', size: 1 }] }),
    ).rejects.toMatchObject({ code: 'E_INPUT' });
    // A vm.json pointing its disk outside the folder, or at the driver's own files.
    const paths = fileVmPaths(root, 'vm');
    const json = JSON.parse(await readFile(paths.vmJson, 'utf8'));
    for (const file of ['../../etc/passwd', '/etc/passwd', 'vm.json', 'd0.raw.overlay']) {
      await writeFile(paths.vmJson, JSON.stringify({ ...json, disks: [{ ...json.disks[0], file }] }));
      const error = await hv.getVM('vm').catch((e: unknown) => e);
      expect(error, file).toMatchObject({ code: 'E_INPUT' });
      expect((error as Error).message).toContain(paths.vmJson);
    }
  });

  it('explains a malformed vm.json with the field and the file', async () => {
    const { root, hv } = await freshDriver();
    await createFileVM(root, { name: 'vm', disks: [{ id: 'd0', size: MiB }] });
    const paths = fileVmPaths(root, 'vm');
    const good = JSON.parse(await readFile(paths.vmJson, 'utf8'));
    const cases: Array<[unknown, string]> = [
      [{ ...good, cpus: 'two' }, '"cpus"'],
      [{ ...good, memoryMiB: -1 }, '"memoryMiB"'],
      [{ ...good, disks: undefined }, '"disks"'],
      [{ ...good, disks: [{ ...good.disks[0], size: 1.5 }] }, '"disks[0].size"'],
      [{ ...good, powerState: 'on' }, '"powerState"'],
      [{ ...good, replica: { state: 'done', writeGeneration: 0, sourceVm: 's' } }, '"replica.state"'],
      [[1, 2], '"(root)"'],
    ];
    for (const [content, field] of cases) {
      await writeFile(paths.vmJson, JSON.stringify(content));
      const error = await hv.getVM('vm').catch((e: unknown) => e);
      expect(error, field).toMatchObject({ code: 'E_FORMAT' });
      expect((error as Error).message).toContain(field);
      expect((error as Error).message).toContain(paths.vmJson);
    }
    await writeFile(paths.vmJson, '{ not json');
    await expect(hv.getVM('vm')).rejects.toMatchObject({
      code: 'E_FORMAT',
      message: expect.stringContaining('not valid JSON'),
    });
    const missing = await hv.getVM('ghost').catch((e: unknown) => e);
    expect(missing).toMatchObject({ code: 'E_NOT_FOUND' });
    expect((missing as Error).message).toContain(join(root, 'ghost'));
  });

  it('says which disk image is too short or too long, and how to fix it', async () => {
    const { root, hv } = await freshDriver();
    await createFileVM(root, { name: 'vm', disks: [{ id: 'd0', size: 4 * MiB }] });
    const vm = await hv.getVM('vm');
    const image = join(fileVmPaths(root, 'vm').dir, 'd0.raw');
    await truncate(image, MiB);
    for (const attempt of [() => hv.getVM('vm'), () => hv.snapshot('vm', 'x'), () => hv.openReader(vm.disks[0]!)]) {
      const error = await attempt().catch((e: unknown) => e);
      expect(error).toMatchObject({ code: 'E_FORMAT' });
      const message = (error as Error).message;
      expect(message).not.toContain('\n');
      for (const part of ["disk 'd0'", image, String(MiB), String(4 * MiB), 'shorter', 'truncate -s']) {
        expect(message).toContain(part);
      }
    }
    await truncate(image, 5 * MiB);
    await expect(hv.getVM('vm')).rejects.toMatchObject({
      code: 'E_FORMAT',
      message: expect.stringContaining('longer'),
    });
    expect(await readdir(join(fileVmPaths(root, 'vm').dir, 'snapshots')).catch(() => [])).toEqual([]);
  });

  it('copies snapshots sparsely: holes stay holes and allocated() is exact', async () => {
    const { root, hv } = await freshDriver();
    const size = 32 * MiB;
    await createFileVM(root, { name: 'vm', disks: [{ id: 'd0', size }] });
    await writeGuestDisk(root, 'vm', 'd0', 5, testPattern(1, 100)); // block 0
    await writeGuestDisk(root, 'vm', 'd0', 20 * MiB - 10, testPattern(2, 20)); // straddles two blocks
    await writeGuestDisk(root, 'vm', 'd0', size - 1, testPattern(3, 1)); // last block
    const snap = await hv.snapshot('vm', 'sparse');
    const copy = join(fileVmPaths(root, 'vm').dir, 'snapshots', snap.id, 'd0.raw');
    const st = await stat(copy);
    expect(st.size).toBe(size);
    expect(st.blocks * 512).toBeLessThanOrEqual(4 * ALLOCATION_GRANULE);
    const reader = await hv.openReader(snap.disks[0]!);
    const extents = [];
    for await (const e of reader.allocated()) extents.push(e);
    expect(reader.blockSize).toBe(ALLOCATION_GRANULE);
    await reader.close();
    expect(extents).toEqual([
      { offset: 0, length: ALLOCATION_GRANULE },
      { offset: 20 * MiB - ALLOCATION_GRANULE, length: 2 * ALLOCATION_GRANULE },
      { offset: size - ALLOCATION_GRANULE, length: ALLOCATION_GRANULE },
    ]);
    // A damaged allocation map is reported, not trusted.
    await writeFile(`${copy}.alloc`, Buffer.from('RKALLOC1 but broken'));
    await expect(hv.openReader(snap.disks[0]!)).rejects.toMatchObject({ code: 'E_FORMAT' });
  });

  it('deletes only the data of a snapshot with keepMetadata', async () => {
    const { root, hv } = await freshDriver();
    await createFileVM(root, { name: 'vm', disks: [{ id: 'd0', size: MiB }] });
    const snap = await hv.snapshot('vm', 'keep');
    await hv.deleteSnapshot(snap, { keepMetadata: true });
    const folder = join(fileVmPaths(root, 'vm').dir, 'snapshots', snap.id);
    expect(await readdir(folder)).toEqual(['snapshot.json']);
    const listed = await hv.listSnapshots('vm');
    expect(listed.map((s) => [s.id, s.meta?.dataDeleted])).toEqual([[snap.id, true]]);
    await expect(hv.openReader(snap.disks[0]!)).rejects.toMatchObject({ code: 'E_NOT_FOUND' });
    await hv.deleteSnapshot(snap);
    expect(await hv.listSnapshots('vm')).toEqual([]);
    await hv.deleteSnapshot(snap); // already gone: nothing to do
  });

  it('hands background removals to a receiver when asked, and removes them itself otherwise', async () => {
    const { root, hv } = await freshDriver();
    await createFileVM(root, { name: 'vm', disks: [{ id: 'd0', size: MiB }] });
    const snapshots = join(fileVmPaths(root, 'vm').dir, 'snapshots');
    const handed: string[] = [];
    handOffRemovals((path) => handed.push(path));
    try {
      await hv.deleteSnapshot(await hv.snapshot('vm', 'one'));
    } finally {
      handOffRemovals(undefined);
    }
    // Moved out of the way durably, then left to the receiver: nothing removed in this process.
    expect(handed).toHaveLength(1);
    expect(handed[0]!.startsWith(join(snapshots, '.deleting-'))).toBe(true);
    expect(await readdir(snapshots)).toEqual([handed[0]!.slice(snapshots.length + 1)]);
    // Without a receiver, the next snapshot sweeps the entry left behind, and a deletion removes its own.
    await hv.deleteSnapshot(await hv.snapshot('vm', 'two'));
    await settleDiscards();
    expect(await readdir(snapshots)).toEqual([]);
  });

  it('sorts snapshot ids by creation', async () => {
    const { root, hv } = await freshDriver();
    await createFileVM(root, { name: 'vm', disks: [{ id: 'd0', size: 64 * KiB }] });
    const ids = [];
    for (let i = 0; i < 5; i++) ids.push((await hv.snapshot('vm', `s${i}`)).id);
    expect([...ids].sort()).toEqual(ids);
    expect((await hv.listSnapshots('vm')).map((s) => s.label)).toEqual(['s0', 's1', 's2', 's3', 's4']);
  });

  it('takes over the lock of a dead process, not of a live one', async () => {
    const { root, hv } = await freshDriver();
    const replica = await hv.ensureReplica({ name: 'rep', source: SOURCE, disks: [{ sourceDiskId: 'd0', size: MiB }] });
    const lock = join(fileVmPaths(root, 'rep').dir, 'd0.raw.lock');
    const dead = spawnSync(process.execPath, ['-e', '0']).pid!;
    await writeFile(lock, JSON.stringify({ pid: dead }));
    const w = await hv.openWriter(replica, replica.disks[0]!);
    await w.close();
    await writeFile(lock, JSON.stringify({ pid: 1 })); // init: alive
    const error = await hv.openWriter(replica, replica.disks[0]!).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'E_CONFLICT' });
    expect((error as Error).message).toContain('process 1');
    await expect(hv.createRestorePoint(replica, 'x')).rejects.toMatchObject({ code: 'E_CONFLICT' });
  });

  it('marks a replica in-progress while it is written directly, and refuses to start it', async () => {
    const { hv } = await freshDriver();
    const replica = await hv.ensureReplica({ name: 'rep', source: SOURCE, disks: [{ sourceDiskId: 'd0', size: MiB }] });
    expect(replica.created).toBe(true);
    expect(await hv.replicaMark(replica)).toBe('in-progress');
    await hv.markReplica(replica, 'ready');
    const w = await hv.openWriter(replica, replica.disks[0]!);
    expect(await hv.replicaMark(replica)).toBe('in-progress');
    await w.write(0, testPattern(1, 10));
    await w.close();
    const error = await hv.power(replica.id, 'start').catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'E_REPLICA_IN_PROGRESS' });
    expect((error as Error).message).toContain('replikit resume <runId>');
    await hv.createRestorePoint(replica, 'v1');
    expect(await hv.replicaMark(replica)).toBe('ready');
    await hv.power(replica.id, 'start');
    await expect(hv.power(replica.id, 'start')).rejects.toMatchObject({ code: 'E_CONFLICT' });
    expect((await hv.replicaState(replica)).details).toMatchObject({ bootCount: 1, writeGeneration: 1 });
  });

  it('snapshots a replica as of its last restore point, never its pending writes', async () => {
    const { hv } = await freshDriver();
    const { replica, disk, model } = await replicaWithPoint(hv);
    const w = await hv.openWriter(replica, disk);
    await w.write(0, testPattern(9, 4096)); // pending in the overlay
    const snap = await hv.snapshot(replica.id, 'of the replica'); // a writer may stay open
    await w.close();
    expect(compareBytes(await readWholeDisk(hv, snap.disks[0]!), model)).toBe('equal');
  });

  it('refuses to delete or write a VM that is not a replica', async () => {
    const { root, hv } = await freshDriver();
    const vm = await createFileVM(root, { name: 'vm', disks: [{ id: 'd0', size: MiB }] });
    const asReplica = { id: vm.id, name: vm.name, disks: vm.disks, created: false };
    await expect(hv.deleteReplica(asReplica)).rejects.toMatchObject({ code: 'E_INPUT' });
    await expect(hv.openWriter(asReplica, vm.disks[0]!)).rejects.toMatchObject({ code: 'E_INPUT' });
    await expect(hv.ensureReplica({ name: 'vm', source: SOURCE, disks: [] })).rejects.toMatchObject({
      code: 'E_CONFLICT',
    });
    expect((await hv.getVM('vm')).id).toBe('vm');
  });

  it('honours an aborted signal without leaving anything half done', async () => {
    const { root, hv } = await freshDriver();
    await createFileVM(root, { name: 'vm', disks: [{ id: 'd0', size: MiB }] });
    const aborted = AbortSignal.abort();
    await expect(hv.snapshot('vm', 'x', { signal: aborted })).rejects.toMatchObject({ code: 'E_ABORTED' });
    // No snapshot (the base rejects before the driver creates even the snapshots folder).
    expect(await readdir(join(fileVmPaths(root, 'vm').dir, 'snapshots')).catch(() => [])).toEqual([]);
    const { replica, disk, model } = await replicaWithPoint(hv);
    const w = await hv.openWriter(replica, disk);
    await w.write(0, testPattern(5, 1000));
    await w.close();
    await expect(hv.createRestorePoint(replica, 'v2', { signal: aborted })).rejects.toMatchObject({
      code: 'E_ABORTED',
    });
    // Nothing half done: no undo file (the folder itself need not exist yet).
    expect(await readdir(join(fileVmPaths(root, 'rep').dir, 'undo')).catch(() => [])).toEqual([]);
    expect(await hv.replicaMark(replica)).toBe('in-progress');
    expect(compareBytes(await readWholeDisk(hv, disk), model)).toBe('equal');
  });

  it('places a replica under another root when the job says so', async () => {
    const { hv } = await freshDriver();
    const elsewhere = await makeTempRoot();
    const replica = await hv.ensureReplica({
      name: 'far',
      source: SOURCE,
      disks: [{ sourceDiskId: 'd0', size: MiB }],
      placement: { root: elsewhere },
    });
    expect(replica.meta).toEqual({ root: elsewhere });
    const roundTrip = JSON.parse(JSON.stringify(replica));
    const w = await hv.openWriter(roundTrip, roundTrip.disks[0]);
    await w.write(10, testPattern(1, 10));
    await w.close();
    await hv.createRestorePoint(roundTrip, 'v1');
    expect(compareBytes((await readWholeDisk(hv, roundTrip.disks[0])).subarray(10, 20), testPattern(1, 10))).toBe(
      'equal',
    );
    expect(await readdir(join(elsewhere, 'far'))).toContain('vm.json');
    await expect(
      hv.ensureReplica({ name: 'x', source: SOURCE, disks: [], placement: { root: 'relative/path' } }),
    ).rejects.toMatchObject({ code: 'E_INPUT' });
  });

  it('a confined driver refuses every folder outside its root, also through a symbolic link', async () => {
    const root = await makeTempRoot();
    const elsewhere = await makeTempRoot();
    const open = createFileDriver({ root });
    const far = await open.ensureReplica({
      name: 'far',
      source: SOURCE,
      disks: [{ sourceDiskId: 'd0', size: MiB }],
      placement: { root: elsewhere },
    });
    const confined = createFileDriver({ root, confine: true });
    const refused = { code: 'E_INPUT', details: { confined: true } };
    await expect(confined.openWriter(far, far.disks[0]!)).rejects.toMatchObject(refused);
    await expect(confined.openReader(far.disks[0]!)).rejects.toMatchObject(refused);
    await expect(confined.replicaState(far)).rejects.toMatchObject(refused);
    await expect(
      confined.ensureReplica({ name: 'x', source: SOURCE, disks: [], placement: { root: elsewhere } }),
    ).rejects.toMatchObject(refused);
    // A folder under the root that links to a replica elsewhere is refused too.
    await symlink(join(elsewhere, 'far'), join(root, 'link'));
    const linked = { ...far, id: 'link', name: 'link', meta: undefined as never };
    await expect(confined.openWriter(linked, { ...far.disks[0]!, vmId: 'link' })).rejects.toMatchObject(refused);
    // Its own root, named or not, is served.
    const own = await confined.ensureReplica({
      name: 'own',
      source: SOURCE,
      disks: [{ sourceDiskId: 'd0', size: MiB }],
      placement: { root },
    });
    const w = await confined.openWriter({ ...own, meta: { root } }, own.disks[0]!);
    await w.write(0, testPattern(2, 10));
    await w.close();
    expect(compareBytes((await readWholeDisk(confined, own.disks[0]!)).subarray(0, 10), testPattern(2, 10))).toBe(
      'equal',
    );
    await open.close();
    await confined.close();
  });

  it('lists only VM folders and fails clearly on a missing root', async () => {
    const { root, hv } = await freshDriver();
    await createFileVM(root, { name: 'b', disks: [] });
    await createFileVM(root, { name: 'a', disks: [] });
    await mkdir(join(root, 'not-a-vm'));
    const dead = spawnSync(process.execPath, ['-e', '0']).pid!;
    await mkdir(join(root, `.tmp-${dead}-abc`)); // what a crash while creating a VM leaves
    expect((await hv.listVMs()).map((v) => v.id)).toEqual(['a', 'b']);
    await createFileVM(root, { name: 'c', disks: [] });
    expect(await readdir(root)).not.toContain(`.tmp-${dead}-abc`);
    const missing = createFileDriver({ root: join(root, 'nope') });
    await expect(missing.listVMs()).rejects.toMatchObject({ code: 'E_NOT_FOUND' });
    await hv.close();
    await expect(hv.listVMs()).rejects.toMatchObject({ code: 'E_STATE' });
  });
});

describe('file driver: file spans of a reader', () => {
  /** Reads what `fileSpans` names with plain positional reads. */
  function readSpans(reader: DiskReader, offset: number, length: number): Uint8Array {
    const out = new Uint8Array(length);
    let at = 0;
    for (const span of reader.fileSpans!(offset, length)) {
      expect(span.length).toBeGreaterThan(0);
      expect(readSync(span.fd, out, at, span.length, span.position)).toBe(span.length);
      at += span.length;
    }
    expect(at).toBe(length);
    return out;
  }

  it('names exactly the bytes readInto reads, for a snapshot chain and a single image', async () => {
    const { root, hv } = await freshDriver();
    const size = 8 * MiB;
    await createFileVM(root, { name: 'vm', disks: [{ id: 'd0', size }], changeTracking: true });
    await writeGuestDisk(root, 'vm', 'd0', 0, testPattern(1, 3 * MiB));
    const first = await hv.snapshot('vm', 'first');
    await writeGuestDisk(root, 'vm', 'd0', MiB + 100, testPattern(2, 200 * KiB));
    await writeGuestDisk(root, 'vm', 'd0', 6 * MiB, testPattern(3, 10));
    const second = await hv.snapshot('vm', 'second');
    for (const snap of [first, second]) {
      const reader = await hv.openReader(snap.disks[0]!);
      try {
        for (const [offset, length] of [
          [0, size],
          [MiB - 4096, 300 * KiB],
          [6 * MiB - 1, 4097],
          [size - 1, 1],
        ] as const) {
          const expected = new Uint8Array(length);
          await reader.readInto!(offset, expected);
          expect(compareBytes(readSpans(reader, offset, length), expected), `${snap.id} ${offset}+${length}`).toBe(
            'equal',
          );
        }
        // The second snapshot reads from two layers: its own changes and the first snapshot's image.
        const files = new Set(reader.fileSpans!(0, size).map((span) => span.path));
        expect(files.size).toBe(snap === second ? 2 : 1);
        expect(() => reader.fileSpans!(size - 10, 11)).toThrow(expect.objectContaining({ code: 'E_INPUT' }));
      } finally {
        await reader.close();
      }
      expect(() => reader.fileSpans!(0, 10)).toThrow(expect.objectContaining({ code: 'E_STATE' }));
    }
  });
});
