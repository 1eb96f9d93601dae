// Issue 11, defect 1, through the CLI as it was reported: a job file with `blockSize: 4MiB` on a
// change-tracking VM validates, runs twice, and the replica equals the VM's disk.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compareBytes, testPattern } from '@replikit/core/testing';
import { createFileVM, writeGuestDisk } from '@replikit/driver-file';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { runCli } from './helpers/cli-harness.js';

const KiB = 1024;
const MiB = 1024 * KiB;
let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'replikit-cli-block-size-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('replikit with blockSize: 4MiB', () => {
  it('validates and runs a full then a tracked run, and the replica equals the disk', async () => {
    const vms = join(dir, 'vms');
    await createFileVM(vms, { name: 'web', disks: [{ id: 'system', size: 32 * MiB }], changeTracking: true });
    const model = new Uint8Array(32 * MiB);
    const write = async (offset: number, data: Uint8Array) => {
      await writeGuestDisk(vms, 'web', 'system', offset, data);
      model.set(data, offset);
    };
    await write(0, testPattern(1, 8 * MiB));
    await write(17 * MiB, testPattern(2, 512 * KiB));
    await write(25 * MiB, testPattern(3, 512 * KiB));
    const path = join(dir, 'job.yaml');
    await writeFile(
      path,
      stringify({
        name: 'big',
        source: { driver: 'file', root: './vms', vm: 'web' },
        target: { driver: 'file', root: './replicas' },
        method: 'qhybrid',
        blockSize: '4MiB',
      }),
    );
    const valid = await runCli(['validate', path], { cwd: dir });
    expect(valid.stdout).toContain("job 'big' is valid");
    expect(valid.code).toBe(0);
    const replica = () => readFile(join(dir, 'replicas', 'web-replica', 'system.raw'));

    const first = await runCli(['run', path], { cwd: dir });
    expect(first.stderr).not.toMatch(/error/i);
    expect(first.code).toBe(0);
    expect(compareBytes(await replica(), model)).toBe('equal');

    await write(17 * MiB, testPattern(4, 4 * KiB));
    await write(26 * MiB, testPattern(5, 4 * KiB));
    const second = await runCli(['run', path], { cwd: dir });
    expect(second.code).toBe(0);
    expect(second.stdout).toMatch(/completed/);
    expect(compareBytes(await replica(), model)).toBe('equal');
  });
});
