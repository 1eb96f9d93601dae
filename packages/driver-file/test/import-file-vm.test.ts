import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createFileDriver, importFileVM } from '../src/index.js';

let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'replikit-import-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function rawImage(name: string, size: number, fill: number, where = dir): Promise<string> {
  const path = join(where, name);
  const bytes = Buffer.alloc(size);
  bytes.fill(fill, 0, 4096);
  await writeFile(path, bytes);
  return path;
}

describe('importFileVM', () => {
  it('links every image into the VM folder, which the driver then reads', async () => {
    const system = await rawImage('system.img', 1 << 20, 1);
    const data = await rawImage('data.raw', 2 << 20, 2);
    const result = await importFileVM(join(dir, 'vms'), { name: 'kvm', images: [{ path: system }, { path: data }] });
    expect(result.disks.map((d) => [d.id, d.method])).toEqual([
      ['system', 'link'],
      ['data', 'link'],
    ]);
    expect((await stat(join(dir, 'vms', 'kvm', 'data.raw'))).ino).toBe((await stat(data)).ino);
    const driver = createFileDriver({ root: join(dir, 'vms') });
    const vm = await driver.getVM('kvm');
    expect(vm.disks.map((d) => [d.id, d.size])).toEqual([
      ['system', 1 << 20],
      ['data', 2 << 20],
    ]);
    await driver.close();
  });

  it('refuses two images with one disk id, and an existing VM, leaving the images alone', async () => {
    const a = await rawImage('disk.raw', 65536, 1);
    const sub = join(dir, 'sub');
    await mkdir(sub);
    const b = await rawImage('disk.raw', 65536, 2, sub);
    await expect(
      importFileVM(join(dir, 'vms'), { name: 'kvm', images: [{ path: a }, { path: b }] }),
    ).rejects.toMatchObject({
      code: 'E_INPUT',
    });
    await importFileVM(join(dir, 'vms'), { name: 'kvm', images: [{ path: a }] });
    await expect(
      importFileVM(join(dir, 'vms'), { name: 'kvm', images: [{ path: b, id: 'other' }] }),
    ).rejects.toMatchObject({
      code: 'E_CONFLICT',
    });
    expect((await stat(b)).nlink).toBe(1);
    expect((await readFile(b))[0]).toBe(2);
    expect((await readdir(join(dir, 'vms'))).filter((entry) => entry.startsWith('.'))).toEqual([]);
  });

  it('an image that cannot be linked undoes the links already made (no folder, originals intact)', async () => {
    const other = await mkdtemp(join('/dev/shm', 'replikit-import-'));
    try {
      if ((await stat(other)).dev === (await stat(dir)).dev) return; // one file system here
      const local = await rawImage('a.raw', 65536, 1);
      const far = await rawImage('b.raw', 65536, 2, other);
      await expect(
        importFileVM(join(dir, 'vms'), { name: 'kvm', images: [{ path: local }, { path: far }] }),
      ).rejects.toMatchObject({ code: 'E_INPUT', message: expect.stringMatching(/another file system.*--copy/) });
      expect(await readdir(join(dir, 'vms'))).toEqual([]);
      expect((await stat(local)).nlink).toBe(1);
    } finally {
      await rm(other, { recursive: true, force: true });
    }
  });
});
