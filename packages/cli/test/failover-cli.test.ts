import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createFileDriver, writeGuestDisk } from '@replikit/driver-file';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { runCli } from './helpers/cli-harness.js';
import { createRandomVm } from './helpers/file-vm.js';

let dir: string;
const MiB = 1024 * 1024;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'replikit-failover-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function replicatedJob(): Promise<string> {
  await createRandomVm(join(dir, 'vms'), 'web', [{ id: 'd0', size: 2 * MiB }]);
  const job = join(dir, 'job.yaml');
  await writeFile(
    job,
    stringify({
      name: 'dr',
      source: { driver: 'file', root: './vms', vm: 'web' },
      target: { driver: 'file', root: './replicas' },
      method: 'qhybrid',
    }),
  );
  expect((await runCli(['run', job], { cwd: dir })).code).toBe(0);
  return job;
}

const replicaImage = () => readFile(join(dir, 'replicas', 'web-replica', 'd0.raw'));

describe('replikit failover', () => {
  it('test runs the health command without a shell and exits by its verdict; unplanned is guarded, undo returns the replica', async () => {
    const job = await replicatedJob();
    const ok = await runCli(
      ['failover', 'test', job, '--', process.execPath, '-e', 'process.exit(process.env.REPLIKIT_CLONE_ID ? 0 : 3)'],
      { cwd: dir },
    );
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/passed; the clone is deleted/);
    const bad = await runCli(['failover', 'test', job, '--', process.execPath, '-e', 'process.exit(4)'], { cwd: dir });
    expect(bad.code).toBe(1);
    expect(bad.stdout).toMatch(/failed \(the health command exited with 4\)/);

    const source = createFileDriver({ root: join(dir, 'vms') });
    await source.power('web', 'start');
    const guarded = await runCli(['failover', 'unplanned', job], { cwd: dir });
    expect(guarded.code).toBe(1);
    expect(guarded.stderr).toContain('E_SPLIT_BRAIN');

    const point = await replicaImage();
    expect((await runCli(['failover', 'unplanned', job, '--force'], { cwd: dir })).code).toBe(0);
    const refused = await runCli(['run', job], { cwd: dir });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('E_FAILED_OVER');
    const status = await runCli(['failover', 'status', job, '--json'], { cwd: dir });
    expect(JSON.parse(status.stdout)).toMatchObject({ state: 'failed-over', orphans: [] });
    await writeGuestDisk(join(dir, 'replicas'), 'web-replica', 'd0', 0, Buffer.alloc(65536, 9));
    expect((await replicaImage()).equals(point)).toBe(false);
    expect((await runCli(['failover', 'undo', job], { cwd: dir })).code).toBe(0);
    expect((await replicaImage()).equals(point)).toBe(true);
    expect((await runCli(['run', job], { cwd: dir })).code).toBe(0);
  });

  it('planned stops the source and starts the replica; commit and permanent retire the job', async () => {
    const job = await replicatedJob();
    const source = createFileDriver({ root: join(dir, 'vms') });
    await source.power('web', 'start');
    await writeGuestDisk(join(dir, 'vms'), 'web', 'd0', MiB, Buffer.alloc(65536, 3));
    const planned = await runCli(['failover', 'planned', job, '--shutdown-timeout', '60'], { cwd: dir });
    expect(planned.code, planned.stderr).toBe(0);
    expect((await source.getVM('web')).powerState).toBe('stopped');
    expect((await replicaImage()).equals(await readFile(join(dir, 'vms', 'web', 'd0.raw')))).toBe(true);
    expect((await runCli(['failover', 'commit', job], { cwd: dir })).code).toBe(0);
    const undo = await runCli(['failover', 'undo', job], { cwd: dir });
    expect(undo.code).toBe(1);
    expect(undo.stderr).toContain('E_FAILED_OVER');
    expect((await runCli(['failover', 'permanent', job], { cwd: dir })).code).toBe(0);
    const run = await runCli(['run', job], { cwd: dir });
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/retired/);
    expect((await runCli(['failover', 'bogus', job], { cwd: dir })).code).toBe(2);
  });
});

describe('replikit status --orphans', () => {
  it('lists, per job that ran, a failover clone no operation owns and a stray run snapshot, and nothing else', async () => {
    await replicatedJob();
    const source = createFileDriver({ root: join(dir, 'vms') });
    const target = createFileDriver({ root: join(dir, 'replicas') });
    const stray = await source.snapshot('web', 'dr-crashed-run');
    await source.snapshot('web', 'someone-else');
    const replica = await target.getVM('web-replica');
    const asReplica = { id: replica.id, name: replica.name, disks: replica.disks, created: false };
    const [point] = await target.listRestorePoints(asReplica);
    await target.cloneRestorePoint!(asReplica, point!, { name: 'left-behind', operationId: 'test-lost' });
    await source.close();
    await target.close();

    const json = await runCli(['status', '--orphans', '--json'], { cwd: dir });
    expect(json.code, json.stderr).toBe(0);
    const [entry] = JSON.parse(json.stdout) as Array<{ job: string; orphans: Array<{ kind: string; id: string }> }>;
    expect(entry!.job).toBe('dr');
    expect(entry!.orphans.map((o) => `${o.kind}:${o.id}`).sort()).toEqual([
      'clone:left-behind',
      `snapshot:${stray.id}`,
    ]);
    const text = await runCli(['status', '--orphans'], { cwd: dir });
    expect(text.stdout).toMatch(/job 'dr': orphan clone left-behind/);
    expect(text.stdout).toMatch(/job 'dr': orphan snapshot .*dr-crashed-run/);
  });
});

describe('replikit failover reverse and failback', () => {
  it('reverse copies the promoted replica back onto the stopped original; failback starts the original and the job replicates again', async () => {
    const job = await replicatedJob();
    const source = createFileDriver({ root: join(dir, 'vms') });
    const target = createFileDriver({ root: join(dir, 'replicas') });
    await source.power('web', 'start');
    expect((await runCli(['failover', 'planned', job], { cwd: dir })).code).toBe(0);
    await writeGuestDisk(join(dir, 'replicas'), 'web-replica', 'd0', 3 * 65536, Buffer.alloc(4096, 7));
    const original = () => readFile(join(dir, 'vms', 'web', 'd0.raw'));
    expect((await replicaImage()).equals(await original())).toBe(false);

    const reverse = await runCli(['failover', 'reverse', job], { cwd: dir });
    expect(reverse.code, reverse.stderr).toBe(0);
    expect(reverse.stdout).toMatch(/from the common snapshot .*: pass: 1 blocks of 65536 bytes sent onto the original/);
    // The original of this VM tracks no changes: every block of both sides is compared, one differs.
    expect(reverse.stdout).toMatch(/disk 0 compared \(replica 1, original \?\): 1\]/);
    expect((await replicaImage()).equals(await original())).toBe(true);
    const status = await runCli(['failover', 'status', job], { cwd: dir });
    expect(status.stdout).toMatch(/last operation: reverse succeeded .*1 blocks sent onto the original/);

    const back = await runCli(['failover', 'failback', job, '--shutdown-timeout', '60', '--json'], { cwd: dir });
    expect(back.code, back.stderr).toBe(0);
    expect(JSON.parse(back.stdout)).toMatchObject({ forced: false, run: expect.any(String) });
    expect((await source.getVM('web')).powerState).toBe('running');
    expect((await target.getVM('web-replica')).powerState).toBe('stopped');
    expect((await replicaImage()).equals(await original())).toBe(true);
    expect((await runCli(['run', job], { cwd: dir })).code).toBe(0);
    const refused = await runCli(['failover', 'failback', job], { cwd: dir });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('E_FAILED_OVER');
  });
});
