import { execFile } from 'node:child_process';
import { readdir, readFile, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { VMInfo } from '@replikit/core';
import { testPattern } from '@replikit/core/testing';
import { afterAll, describe, expect, it } from 'vitest';
import { createFileDriver, createFileVM, fileVmPaths, overlayPath, readVmJson, writeGuestDisk } from '../src/index.js';
import { makeTempRoot, removeTempRoots } from './helpers/temp-root.js';

const MiB = 1024 * 1024;
const SOURCE: VMInfo = { id: 'source', name: 'source', cpus: 1, memoryMiB: 256, powerState: 'stopped', disks: [] };

afterAll(removeTempRoots);

/** A file outside the driver's root that must never be read into a VM nor written through. */
async function outsideFile(size: number): Promise<{ path: string; bytes: Uint8Array }> {
  const bytes = testPattern(77, size);
  const path = join(await makeTempRoot('rk-outside-'), 'secret.bin');
  await writeFile(path, bytes);
  return { path, bytes };
}

async function expectIntact(file: { path: string; bytes: Uint8Array }) {
  expect(Buffer.compare(await readFile(file.path), file.bytes)).toBe(0);
}

function refusedLink(path: string) {
  return { code: 'E_FORMAT', message: expect.stringMatching(new RegExp(`^[^\\n]*${path}[^\\n]*symbolic link`)) };
}

describe('file driver: disk files that are symbolic links are refused, never followed', () => {
  it('a source disk linked outside the VM folder is neither read, snapshotted nor written', async () => {
    const root = await makeTempRoot();
    const hv = createFileDriver({ root });
    const vm = await createFileVM(root, { name: 'vm', disks: [{ id: 'd0', size: 2 * MiB }] });
    const secret = await outsideFile(2 * MiB);
    const image = join(fileVmPaths(root, 'vm').dir, 'd0.raw');
    await rm(image);
    await symlink(secret.path, image);
    await expect(hv.getVM('vm')).rejects.toMatchObject(refusedLink(image));
    await expect(hv.snapshot('vm', 'x')).rejects.toMatchObject(refusedLink(image));
    await expect(hv.openReader(vm.disks[0]!)).rejects.toMatchObject(refusedLink(image));
    await expect(writeGuestDisk(root, 'vm', 'd0', 0, new Uint8Array(4096))).rejects.toMatchObject(refusedLink(image));
    expect(await readdir(join(fileVmPaths(root, 'vm').dir, 'snapshots')).catch(() => [])).toEqual([]);
    await expectIntact(secret);
  });

  it('a snapshot copy or a vm.json replaced by a link is refused', async () => {
    const root = await makeTempRoot();
    const hv = createFileDriver({ root });
    await createFileVM(root, { name: 'vm', disks: [{ id: 'd0', size: 2 * MiB }] });
    await writeGuestDisk(root, 'vm', 'd0', 0, testPattern(1, 8192));
    const snap = await hv.snapshot('vm', 'x');
    const secret = await outsideFile(2 * MiB);
    const copy = join(fileVmPaths(root, 'vm').dir, 'snapshots', snap.id, 'd0.raw');
    await rm(copy);
    await symlink(secret.path, copy);
    await expect(hv.openReader(snap.disks[0]!)).rejects.toMatchObject(refusedLink(copy));
    const vmJson = fileVmPaths(root, 'vm').vmJson;
    await rename(vmJson, `${secret.path}.json`);
    await symlink(`${secret.path}.json`, vmJson);
    await expect(hv.getVM('vm')).rejects.toMatchObject(refusedLink(vmJson));
    await expectIntact(secret);
  });

  it('a snapshots folder linked outside the VM folder is neither written nor read', async () => {
    const root = await makeTempRoot();
    const hv = createFileDriver({ root });
    await createFileVM(root, { name: 'vm', disks: [{ id: 'd0', size: 2 * MiB }] });
    await writeGuestDisk(root, 'vm', 'd0', 0, testPattern(1, 8192));
    const elsewhere = await makeTempRoot('rk-outside-');
    const snapshots = join(fileVmPaths(root, 'vm').dir, 'snapshots');
    await symlink(elsewhere, snapshots);
    await expect(hv.snapshot('vm', 'x')).rejects.toMatchObject(refusedLink(snapshots));
    expect(await readdir(elsewhere)).toEqual([]);
    // a snapshot taken before, whose folder is then moved out and linked back
    await rm(snapshots);
    const snap = await hv.snapshot('vm', 'y');
    const folder = join(snapshots, snap.id);
    await rename(folder, join(elsewhere, snap.id));
    await symlink(join(elsewhere, snap.id), folder);
    await expect(hv.openReader(snap.disks[0]!)).rejects.toMatchObject(refusedLink(folder));
  });

  it('a replica disk linked outside is not written through, before or after its first restore point', async () => {
    const root = await makeTempRoot();
    const hv = createFileDriver({ root });
    const replica = await hv.ensureReplica({ name: 'rep', source: SOURCE, disks: [{ sourceDiskId: 'd0', size: MiB }] });
    const dir = fileVmPaths(root, 'rep').dir;
    const file = (await readVmJson(dir)).disks[0]!.file;
    const image = join(dir, file);
    const secret = await outsideFile(MiB);
    // direct mode (no restore point yet): the image itself is written
    await rm(image);
    await symlink(secret.path, image);
    await expect(hv.openWriter(replica, replica.disks[0]!)).rejects.toMatchObject(refusedLink(image));
    await rm(image);
    await writeFile(image, new Uint8Array(MiB));
    const writer = await hv.openWriter(replica, replica.disks[0]!);
    await writer.write(0, testPattern(2, 4096));
    await writer.close();
    await hv.createRestorePoint(replica, 'v1');
    // overlay mode: writes go to <image>.overlay
    const overlay = overlayPath(dir, file);
    await symlink(secret.path, overlay);
    await expect(hv.openWriter(replica, replica.disks[0]!)).rejects.toMatchObject(refusedLink(overlay));
    await expectIntact(secret);
  });
});

describe('file driver: undo files stay inside the replica folder', () => {
  it('an undo folder linked outside is refused, and nothing is written there', async () => {
    const root = await makeTempRoot();
    const hv = createFileDriver({ root });
    const replica = await hv.ensureReplica({ name: 'rep', source: SOURCE, disks: [{ sourceDiskId: 'd0', size: MiB }] });
    for (const [seed, label] of [
      [1, 'v1'],
      [2, 'v2'],
    ] as const) {
      const writer = await hv.openWriter(replica, replica.disks[0]!);
      await writer.write(0, testPattern(seed, 4096));
      await writer.close();
      await hv.createRestorePoint(replica, label);
    }
    const elsewhere = await makeTempRoot('rk-outside-');
    const undo = join(fileVmPaths(root, 'rep').dir, 'undo');
    await rm(undo, { recursive: true, force: true });
    await symlink(elsewhere, undo);
    const writer = await hv.openWriter(replica, replica.disks[0]!);
    await writer.write(0, testPattern(3, 4096));
    await writer.close();
    await expect(hv.createRestorePoint(replica, 'v3')).rejects.toMatchObject(refusedLink(undo));
    expect(await readdir(elsewhere)).toEqual([]);
  });
});

describe('file driver: a VM disk that is not a raw image is refused', () => {
  it('a qcow2 made by qemu-img, of the size vm.json declares', async () => {
    const root = await makeTempRoot();
    const hv = createFileDriver({ root });
    const qcow2 = join(root, 'disk.qcow2');
    await promisify(execFile)('qemu-img', ['create', '-q', '-f', 'qcow2', qcow2, '64M']);
    await promisify(execFile)('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 0 1M', qcow2]);
    const size = (await stat(qcow2)).size;
    await createFileVM(root, { name: 'vm', disks: [{ id: 'd0', size }] });
    const image = join(fileVmPaths(root, 'vm').dir, 'd0.raw');
    await rename(qcow2, image);
    const refused = { code: 'E_FORMAT', message: expect.stringMatching(/d0.*qcow2.*qemu-img convert -f qcow2 -O raw/) };
    await expect(hv.getVM('vm')).rejects.toMatchObject(refused);
    await expect(hv.snapshot('vm', 'x')).rejects.toMatchObject(refused);
    await expect(hv.openReader({ id: 'd0', vmId: 'vm', size })).rejects.toMatchObject(refused);
  });

  it('passes a raw disk whose guest wrote a compressed stream at byte 0 (guest content, not a container)', async () => {
    const root = await makeTempRoot();
    const hv = createFileDriver({ root });
    await createFileVM(root, { name: 'vm', disks: [{ id: 'd0', size: 1024 * 1024 }] });
    const gzipHead = Uint8Array.from([0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0]);
    await writeGuestDisk(root, 'vm', 'd0', 0, gzipHead);
    const snapshot = await hv.snapshot('vm', 'x');
    const reader = await hv.openReader(snapshot.disks[0]!);
    expect(Array.from(await reader.read(0, 8))).toEqual(Array.from(gzipHead));
    await reader.close();
  });
});

describe('openDataFile', () => {
  it('opens a regular file and refuses a link, a FIFO (without waiting for a writer) and a folder', async () => {
    const { openDataFile, READ, READ_WRITE } = await import('../src/data-file.js');
    const { spawnSync } = await import('node:child_process');
    const dir = await makeTempRoot();
    await writeFile(join(dir, 'plain'), 'x');
    await symlink(join(dir, 'plain'), join(dir, 'link'));
    expect(spawnSync('mkfifo', [join(dir, 'fifo')]).status).toBe(0);
    const fh = await openDataFile(join(dir, 'plain'), READ_WRITE, { what: 'a test file' });
    await fh.close();
    await expect(openDataFile(join(dir, 'link'), READ, { what: 'a test file' })).rejects.toMatchObject(
      refusedLink(join(dir, 'link')),
    );
    for (const name of ['fifo', '.']) {
      await expect(openDataFile(join(dir, name), READ, { what: 'a test file' })).rejects.toMatchObject({
        code: 'E_FORMAT',
        message: expect.stringContaining('is not a regular file'),
      });
    }
  });
});
