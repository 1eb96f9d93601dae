import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createFileDriver } from '@replikit/driver-file';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { runCli } from './helpers/cli-harness.js';
import { createRandomVm, digestOf } from './helpers/file-vm.js';

const MiB = 1024 * 1024;
let dir: string;
let mounted = false;
let mountError = '';

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'replikit-nospace-'));
  await mkdir(join(dir, 'replicas'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=20m', 'tmpfs', join(dir, 'replicas')], { stdio: 'pipe' });
    mounted = true;
  } catch (error) {
    mountError = String((error as Error).message).split('\n')[0]!;
  }
});

afterAll(async () => {
  if (mounted) execFileSync('umount', [join(dir, 'replicas')]);
  await rm(dir, { recursive: true, force: true });
});

describe('a full disk during a run', () => {
  it('fails the run with one clear line (E_NO_SPACE) and rolls the replica back', async (context) => {
    if (!mounted) context.skip(`needs root to mount a small tmpfs: ${mountError}`);
    await createRandomVm(join(dir, 'vms'), 'web', [
      { id: 'a', size: 8 * MiB },
      { id: 'b', size: 6 * MiB },
    ]);
    const job = join(dir, 'job.yaml');
    await writeFile(
      job,
      stringify({
        name: 'nospace',
        source: { driver: 'file', root: './vms', vm: 'web' },
        target: { driver: 'file', root: './replicas' },
        method: 'qhybrid',
      }),
    );
    const first = await runCli(['run', job], { cwd: dir });
    expect(first.code).toBe(0);
    const target = createFileDriver({ root: join(dir, 'replicas') });
    const replica = await target.getVM('web-replica');
    const before = await Promise.all(replica.disks.map((disk) => digestOf(target, disk)));

    // Every block changes: the second run's pending writes (14 MiB) cannot fit next to the replica.
    await rm(join(dir, 'vms', 'web'), { recursive: true });
    await createRandomVm(join(dir, 'vms'), 'web', [
      { id: 'a', size: 8 * MiB },
      { id: 'b', size: 6 * MiB },
    ]);
    const second = await runCli(['run', job], { cwd: dir });
    expect(second.code).toBe(1);
    const errorLines = second.stderr.split('\n').filter((line) => line.startsWith('replikit:'));
    expect(errorLines).toHaveLength(1);
    expect(errorLines[0]).toMatch(/^replikit: E_NO_SPACE: no space left while .*free space/);
    expect(second.stderr).not.toMatch(/\n\s+at /);

    expect(await target.replicaMark({ ...replica, created: false })).toBe('ready');
    const after = await Promise.all(replica.disks.map((disk) => digestOf(target, disk)));
    expect(after).toEqual(before);
    const runs = await runCli(['runs', '--json'], { cwd: dir });
    const records = JSON.parse(runs.stdout) as Array<{ state: string; rolledBack?: boolean }>;
    expect(records.at(-1)).toMatchObject({ state: 'failed', rolledBack: true });
    await target.close();
  });
});
