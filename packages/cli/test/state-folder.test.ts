import { symlinkSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { DriverRegistry, FileStateStore, ReplicationEngine } from '@replikit/core';
import { createFileDriver, fileDriver } from '@replikit/driver-file';
import { localTransport } from '@replikit/transport';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { runCli } from './helpers/cli-harness.js';
import { createRandomVm, digestOf, guestChanges } from './helpers/file-vm.js';

const MiB = 1024 * 1024;
let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'replikit-state-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('the default state folder', () => {
  it('is one per user, whatever the working folder, and help says where', async () => {
    // No --state-dir and no REPLIKIT_STATE_DIR: the per-user default.
    const xdg = await runCli(['help'], { cwd: dir, env: { REPLIKIT_STATE_DIR: '', XDG_STATE_HOME: '/xdg/state' } });
    expect(xdg.stdout).toContain('Here: /xdg/state/replikit');
    for (const cwd of [dir, tmpdir()]) {
      const home = await runCli(['help'], { cwd, env: { REPLIKIT_STATE_DIR: '', HOME: '/home/ann' } });
      expect(home.stdout).toContain('Here: /home/ann/.local/state/replikit');
      expect(home.stdout).toContain('$XDG_STATE_HOME/replikit');
    }
    const flag = await runCli(['help', '--state-dir', 'mine'], { cwd: dir, env: { HOME: '/home/ann' } });
    expect(flag.stdout).toContain(`Here: ${join(dir, 'mine')}`);
  });
});

describe('replikit resume', () => {
  /**
   * A job with one committed run, and a second run whose commit, then rollback, met a replica lock
   * of another live process: it stays in cleanup with that error, holding the replica.
   */
  async function stuckInCleanup() {
    const vms = join(dir, 'vms');
    const replicas = join(dir, 'replicas');
    const disk = { id: 'd0', size: 4 * MiB };
    await createRandomVm(vms, 'web', [disk], 0.5);
    const job = {
      name: 'web',
      source: { driver: 'file', root: vms, vm: 'web' },
      target: { driver: 'file', root: replicas },
      method: 'qhybrid',
    };
    const path = join(dir, 'job.yaml');
    await writeFile(path, stringify(job));
    expect((await runCli(['run', path], { cwd: dir })).code).toBe(0);
    const target = createFileDriver({ root: replicas });
    const [replica] = await target.listVMs();
    const committed = await digestOf(target, replica!.disks[0]!);

    await guestChanges(vms, 'web', disk, 0.5);
    const engine = new ReplicationEngine({
      transport: localTransport(),
      stateStore: new FileStateStore(join(dir, '.replikit')),
      drivers: new DriverRegistry().register(fileDriver),
    });
    const lock = join(replicas, replica!.id, '.replica.lock');
    engine.on('state', (event) => {
      if (event.to === 'transfer') symlinkSync(`pid:1@${hostname()}`, lock);
    });
    await expect(engine.run(job)).rejects.toMatchObject({ code: 'E_CONFLICT' });
    const [stuck] = (await new FileStateStore(join(dir, '.replikit')).listRuns()).filter((r) => r.state === 'cleanup');
    expect(stuck?.error?.message).toContain('in use by process 1');
    await rm(lock);
    return { target, replica: replica!, committed, runId: stuck!.runId };
  }

  it('says a run was rolled back without printing the error that once stopped it', async () => {
    const { target, replica, committed, runId } = await stuckInCleanup();
    const resumed = await runCli(['resume', runId, '--rollback'], { cwd: dir });
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(resumed.stdout).toContain(`run ${runId} (job web) rolled back to its last restore point`);
    expect(`${resumed.stdout}${resumed.stderr}`).not.toContain('in use by process 1');
    expect(await digestOf(target, replica.disks[0]!)).toBe(committed);
  });

  it('abandons a run: says what it did, drops only its own pending writes and releases the replica', async () => {
    const { target, replica, committed, runId } = await stuckInCleanup();
    const points = await target.listRestorePoints({ ...replica, created: false });
    const abandoned = await runCli(['resume', runId, '--abandon'], { cwd: dir });
    expect(abandoned.code, abandoned.stderr).toBe(0);
    expect(abandoned.stdout).toMatch(
      new RegExp(
        `run ${runId} \\(job web\\) abandoned: .*pending writes on replica .* were dropped .*no restore point was reverted`,
      ),
    );
    expect(await target.listRestorePoints({ ...replica, created: false })).toEqual(points);
    expect(await target.replicaOwner({ ...replica, created: false })).toBeUndefined();
    expect(await digestOf(target, replica.disks[0]!)).toBe(committed);
    const again = await runCli(['runs', '--json'], { cwd: dir });
    expect(JSON.parse(again.stdout).at(-1)).toMatchObject({ runId, state: 'cancelled', abandoned: true });
  });

  it('takes --rollback or --abandon, not both', async () => {
    const { code, stderr } = await runCli(['resume', 'x', '--rollback', '--abandon'], { cwd: dir });
    expect(code).toBe(2);
    expect(stderr).toContain('--rollback or --abandon, not both');
  });
});
