import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { runCli } from './helpers/cli-harness.js';

const run = promisify(execFile);
let dir: string;
let image: string;

/** Writes into the raw image as a KVM guest would: through qemu-io, not through replikit. */
async function qemuWrite(path: string, pattern: number, offset: string, length: string): Promise<void> {
  await run('qemu-io', ['-f', 'raw', '-c', `write -P ${pattern} ${offset} ${length}`, path]);
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'replikit-vm-import-'));
  image = join(dir, 'guest.raw');
  await run('qemu-img', ['create', '-q', '-f', 'raw', image, '8M']);
  await qemuWrite(image, 0xab, '0', '64k');
  await qemuWrite(image, 0x5c, '3M', '192k');
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function job(): Promise<string> {
  const path = join(dir, 'job.yaml');
  await writeFile(
    path,
    stringify({
      name: 'kvm',
      source: { driver: 'file', root: './vms', vm: 'web' },
      target: { driver: 'file', root: './replicas' },
      method: 'qhybrid',
    }),
  );
  return path;
}

describe('replikit vm import', () => {
  it('hard-links a raw image made by qemu-img into a VM folder that replicates byte for byte', async () => {
    const imported = await runCli(['vm', 'import', 'web', image, '--root', 'vms'], { cwd: dir });
    expect(imported.stderr).toBe('');
    expect(imported.code).toBe(0);
    const inVm = join(dir, 'vms', 'web', 'guest.raw');
    const [original, linked] = await Promise.all([stat(image), stat(inVm)]);
    expect(linked.ino).toBe(original.ino); // not copied: one file
    expect(original.nlink).toBe(2);

    const path = await job();
    expect((await runCli(['run', path], { cwd: dir })).code).toBe(0);
    const replica = join(dir, 'replicas', 'web-replica', 'guest.raw');
    expect((await readFile(replica)).equals(await readFile(image))).toBe(true);

    // The guest writes its image directly; the next run still brings the replica level with it.
    await qemuWrite(image, 0x11, '5M', '4k');
    expect((await runCli(['run', path], { cwd: dir })).code).toBe(0);
    expect((await readFile(replica)).equals(await readFile(image))).toBe(true);
    expect((await stat(image)).ino).toBe(original.ino);
  });

  it('refuses a qcow2 image, naming it, and creates no folder', async () => {
    const qcow2 = join(dir, 'guest.qcow2');
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', qcow2, '8M']);
    const { code, stderr } = await runCli(['vm', 'import', 'web', qcow2, '--root', 'vms'], { cwd: dir });
    expect(code).toBe(1);
    expect(stderr).toMatch(/^replikit: E_FORMAT: .*guest\.qcow2 is a QEMU qcow2 image.*qemu-img convert/);
    expect(existsSync(join(dir, 'vms', 'web'))).toBe(false);
  });

  it('refuses a symbolic link to an image', async () => {
    const link = join(dir, 'link.raw');
    await symlink(image, link);
    const { code, stderr } = await runCli(['vm', 'import', 'web', link, '--root', 'vms'], { cwd: dir });
    expect(code).not.toBe(0);
    expect(stderr).toMatch(/link\.raw.*link/);
    expect(existsSync(join(dir, 'vms', 'web'))).toBe(false);
  });

  it('refuses an image on another file system unless --copy, which copies it', async () => {
    const other = await mkdtemp(join('/dev/shm', 'replikit-vm-import-'));
    try {
      if ((await stat(other)).dev === (await stat(dir)).dev) return; // one file system here: nothing to check
      const root = join(other, 'vms');
      const refused = await runCli(['vm', 'import', 'web', image, '--root', root], { cwd: dir });
      expect(refused.code).toBe(2);
      expect(refused.stderr).toMatch(/^replikit: E_INPUT: .*guest\.raw is on another file system .*--copy/);
      expect(existsSync(join(root, 'web'))).toBe(false);

      const copied = await runCli(['vm', 'import', 'web', image, '--root', root, '--copy'], { cwd: dir });
      expect(copied.code).toBe(0);
      expect(copied.stdout).toContain('a copy');
      expect((await readFile(join(root, 'web', 'guest.raw'))).equals(await readFile(image))).toBe(true);
      expect((await stat(image)).nlink).toBe(1);
    } finally {
      await rm(other, { recursive: true, force: true });
    }
  });
});

describe('replikit vm create and vm list', () => {
  it('creates a VM with sparse disks and lists it', async () => {
    const created = await runCli(
      ['vm', 'create', 'db', '--disk', 'system:4MiB', '--disk', 'data:1MiB', '--root', 'vms'],
      {
        cwd: dir,
      },
    );
    expect(created.code).toBe(0);
    expect((await stat(join(dir, 'vms', 'db', 'system.raw'))).size).toBe(4 * 1024 * 1024);
    const listed = await runCli(['vm', 'list', '--root', 'vms', '--json'], { cwd: dir });
    expect(listed.code).toBe(0);
    const vms = JSON.parse(listed.stdout) as Array<{ name: string; disks: Array<{ id: string; size: number }> }>;
    expect(vms.map((vm) => vm.name)).toEqual(['db']);
    expect(vms[0]!.disks.map((d) => [d.id, d.size])).toEqual([
      ['system', 4 * 1024 * 1024],
      ['data', 1024 * 1024],
    ]);
    expect((await runCli(['vm', 'list', '--root', 'vms'], { cwd: dir })).stdout).toMatch(/^db +stopped +system 4/);
  });
});
