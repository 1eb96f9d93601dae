import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { runCli } from './helpers/cli-harness.js';

const MiB = 1024 * 1024;
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'replikit-disk-cli-'));
  const bytes = new Uint8Array(6 * MiB);
  for (let i = 0; i < 200_000; i++) bytes[i] = (i * 31) & 255;
  bytes.fill(0x5a, 4 * MiB, 4 * MiB + 4096);
  await writeFile(join(dir, 'a.raw'), bytes);
});
afterAll(async () => rm(dir, { recursive: true, force: true }));

describe('replikit disk', () => {
  it('converts raw to VHDX and VHD, and the results compare equal (exit 0)', async () => {
    const vhdx = await runCli(['disk', 'convert', 'a.raw', 'a.vhdx', '--to', 'vhdx', '--block-size', '2MiB'], {
      cwd: dir,
    });
    expect(vhdx).toMatchObject({ code: 0, stderr: '' });
    expect(vhdx.stdout).toMatch(/converted a\.raw to a\.vhdx \(vhdx\)/);
    expect((await runCli(['disk', 'convert', 'a.vhdx', 'a.vhd', '--to', 'vhd'], { cwd: dir })).code).toBe(0);
    const same = await runCli(['disk', 'compare', 'a.raw', 'a.vhd'], { cwd: dir });
    expect(same).toMatchObject({ code: 0 });
    expect(same.stdout).toMatch(/equal contents/);
  });

  it('info prints the format, as text and as JSON', async () => {
    const text = await runCli(['disk', 'info', 'a.vhdx'], { cwd: dir });
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/format: +vhdx \(dynamic\)/);
    const json = await runCli(['disk', 'info', 'a.vhdx', '--json'], { cwd: dir });
    const info = JSON.parse(json.stdout);
    expect(info).toMatchObject({ format: 'vhdx', subformat: 'dynamic', size: 6 * MiB, blockSize: 2 * MiB });
    expect(info.allocatedBytes).toBe(4 * MiB); // blocks 0 and 2; block 1 and the last one hold only zeroes
  });

  it('compare exits 1 with the first differing offset', async () => {
    const bytes = new Uint8Array(await readFile(join(dir, 'a.raw')));
    bytes[4 * MiB + 100] = 1;
    await writeFile(join(dir, 'b.raw'), bytes);
    const diff = await runCli(['disk', 'compare', 'a.vhdx', 'b.raw'], { cwd: dir });
    expect(diff.code).toBe(1);
    expect(diff.stdout).toContain(`first difference at byte ${4 * MiB + 100}`);
  });

  it('check: 0 for a good image, 1 with a clear message for a damaged one', async () => {
    expect(await runCli(['disk', 'check', 'a.vhdx'], { cwd: dir })).toMatchObject({ code: 0 });
    const bytes = new Uint8Array(await readFile(join(dir, 'a.vhd')));
    bytes[bytes.length - 512 + 70]! ^= 0xff; // inside the footer: its checksum no longer matches
    bytes[70]! ^= 0xff; // and its copy at offset 0
    await writeFile(join(dir, 'bad.vhd'), bytes);
    const bad = await runCli(['disk', 'check', 'bad.vhd'], { cwd: dir });
    expect(bad.code).toBe(1);
    expect(bad.stdout).toMatch(/VHD footer at byte \d+: checksum mismatch/);
    const info = await runCli(['disk', 'info', 'bad.vhd'], { cwd: dir });
    expect(info.code).toBe(1);
    expect(info.stderr).toMatch(/^replikit: E_FORMAT: .*checksum mismatch/);
  });

  it('usage errors exit 2', async () => {
    expect((await runCli(['disk', 'convert', 'a.raw', 'x.img', '--to', 'qcow2'], { cwd: dir })).code).toBe(2);
    expect((await runCli(['disk', 'info'], { cwd: dir })).code).toBe(2);
    expect((await runCli(['disk', 'frobnicate'], { cwd: dir })).code).toBe(2);
    expect(
      (await runCli(['disk', 'convert', 'a.raw', 'y.vhdx', '--to', 'vhdx', '--block-size', '3MiB'], { cwd: dir })).code,
    ).toBe(2);
  });
});

describe('replikit disk convert into its own input', () => {
  it('refuses the same path, a symbolic link or a hard link with E_INPUT and exit 2, input intact', async () => {
    const { link, symlink } = await import('node:fs/promises');
    const before = await readFile(join(dir, 'a.raw'));
    await symlink(join(dir, 'a.raw'), join(dir, 'a-link.raw'));
    await link(join(dir, 'a.raw'), join(dir, 'a-hard.raw'));
    for (const output of ['a.raw', 'a-link.raw', 'a-hard.raw']) {
      for (const to of ['raw', 'vhd', 'vhdx']) {
        const result = await runCli(['disk', 'convert', 'a.raw', output, '--to', to], { cwd: dir });
        expect(result).toMatchObject({ code: 2, stdout: '' });
        expect(result.stderr).toMatch(/^replikit: E_INPUT: .*same file as the input.*\n$/);
      }
    }
    expect(Buffer.compare(await readFile(join(dir, 'a.raw')), before)).toBe(0);
  });
});

describe('replikit disk on an image format it does not read', () => {
  it('info, check, compare and convert refuse a qcow2 made by qemu-img, saying how to convert it', async () => {
    const { execFile } = await import('node:child_process');
    const { promisify } = await import('node:util');
    const qcow2 = join(dir, 'vm.qcow2');
    await promisify(execFile)('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', join(dir, 'a.raw'), qcow2]);
    const says = /\S*vm\.qcow2 is a QEMU qcow2 image.*qemu-img convert -f qcow2 -O raw .*vm\.qcow2 <out\.raw>/;
    for (const args of [
      ['info', 'vm.qcow2'],
      ['compare', 'a.raw', 'vm.qcow2'],
      ['convert', 'vm.qcow2', 'q.raw', '--to', 'raw'],
    ]) {
      const result = await runCli(['disk', ...args], { cwd: dir });
      expect(result).toMatchObject({ code: 1, stdout: '' });
      expect(result.stderr).toMatch(new RegExp(`^replikit: E_FORMAT: ${says.source}\\n$`));
    }
    const check = await runCli(['disk', 'check', 'vm.qcow2'], { cwd: dir });
    expect(check.code).toBe(1);
    expect(check.stdout).toMatch(says);
  });
});

describe('replikit disk on what is not a file', () => {
  it('refuses a FIFO at once (E_INPUT, exit 2) instead of waiting for a writer', async () => {
    const { spawnSync } = await import('node:child_process');
    const { spawnCli, waitForExit } = await import('./helpers/cli-harness.js');
    const fifo = join(dir, 'pipe');
    expect(spawnSync('mkfifo', [fifo]).status).toBe(0);
    for (const args of [
      ['info', 'pipe'],
      ['check', 'pipe'],
      ['compare', 'a.raw', 'pipe'],
      ['convert', 'pipe', 'p.raw', '--to', 'raw'],
    ]) {
      const child = spawnCli(['disk', ...args], { cwd: dir });
      // a child left blocked on the FIFO (the bug) is killed when the test ends, even on a timeout
      onTestFinished(() => {
        if (child.exitCode === null) child.kill('SIGKILL');
      });
      const result = await waitForExit(child);
      expect(result).toMatchObject({ code: 2, stdout: '' });
      expect(result.stderr).toMatch(/^replikit: E_INPUT: \S*pipe is a FIFO, not a disk image[^\n]*\n$/);
    }
  });

  it('the message on SIGTERM speaks of a run only for commands that run one', async () => {
    const { interruptNotice } = await import('../src/main.js');
    expect(interruptNotice(['run', 'job.yaml'], 'SIGINT')).toMatch(/the run is rolled back/);
    expect(interruptNotice(['resume', 'r1'], 'SIGINT')).toMatch(/the run is rolled back/);
    // SIGTERM of a run, and either signal of the daemon, stop the run at a checkpoint (resumable).
    expect(interruptNotice(['run', 'job.yaml'], 'SIGTERM')).toMatch(/at a checkpoint; the run stays unfinished/);
    expect(interruptNotice(['daemon', 'jobs/'], 'SIGINT')).toMatch(/at a checkpoint/);
    for (const argv of [['disk', 'info', 'x.raw'], ['disk', 'compare', 'a', 'b'], ['validate', 'j.yaml'], []]) {
      const notice = interruptNotice(argv, 'SIGTERM');
      expect(notice).toMatch(/^replikit: SIGTERM: stopping/);
      expect(notice).not.toMatch(/\brun\b/);
    }
    expect(interruptNotice(['disk', 'convert', 'a', 'b', '--to', 'raw'], 'SIGTERM')).toMatch(/output .*as it was/);
    // An option's value before the command is not the command (`--state-dir DIR run job.yaml`).
    const { checkpointsOn } = await import('../src/main.js');
    expect(checkpointsOn(['--state-dir', '/srv/state', 'run', 'job.yaml'], 'SIGTERM')).toBe(true);
    expect(checkpointsOn(['--state-dir', '/srv/state', 'daemon', 'jobs/'], 'SIGINT')).toBe(true);
    expect(checkpointsOn(['--state-dir=/srv/state', 'resume', 'r1'], 'SIGTERM')).toBe(true);
    expect(checkpointsOn(['--state-dir', '/srv/state', 'run', 'job.yaml'], 'SIGINT')).toBe(false);
    expect(interruptNotice(['--state-dir', 'st', 'run', 'job.yaml'], 'SIGINT')).toMatch(/the run is rolled back/);
  });
});
