import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createFileDriver } from '@replikit/driver-file';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { runCli, spawnCli, waitForExit } from './helpers/cli-harness.js';
import { createRandomVm, digestOf, guestChanges } from './helpers/file-vm.js';

const MiB = 1024 * 1024;
const ROUNDS = 4;
let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'replikit-race-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('two replikit processes with two state folders run one job', () => {
  it('one holds the replica, the other says who and what to do; no restore point is lost', async () => {
    const disk = { id: 'd0', size: 4 * MiB };
    await createRandomVm(join(dir, 'vms'), 'web', [disk], 0.5);
    const job = join(dir, 'job.yaml');
    await writeFile(
      job,
      stringify({
        name: 'web',
        source: { driver: 'file', root: './vms', vm: 'web' },
        target: { driver: 'file', root: './replicas' },
        method: 'qhybrid',
        options: { retention: 100 },
      }),
    );
    const folders = [join(dir, 'cron'), join(dir, 'shell')];
    expect((await runCli(['run', job], { cwd: dir, env: { REPLIKIT_STATE_DIR: folders[0] } })).code).toBe(0);
    const source = createFileDriver({ root: join(dir, 'vms') });
    const target = createFileDriver({ root: join(dir, 'replicas') });
    const [replica] = await target.listVMs();
    const ref = { id: replica!.id, name: replica!.name, disks: replica!.disks, created: false };
    let losers = 0;
    for (let round = 0; round < ROUNDS; round++) {
      await guestChanges(join(dir, 'vms'), 'web', disk, 0.3);
      const before = (await target.listRestorePoints(ref)).map((p) => p.id);
      const results = await Promise.all(
        folders.map((folder) => waitForExit(spawnCli(['run', job], { cwd: dir, env: { REPLIKIT_STATE_DIR: folder } }))),
      );
      const won = results.filter((r) => r.code === 0);
      expect(won.length, results.map((r) => r.stderr).join('\n')).toBeGreaterThan(0);
      for (const lost of results.filter((r) => r.code !== 0)) {
        losers++;
        expect(lost.code, lost.stderr).toBe(1);
        expect(lost.stderr).toMatch(/is held by run \S+ \(host .+, pid \d+, state folder .+(cron|shell)\)/);
        expect(lost.stderr).toMatch(/, so run \S+ stopped before writing anything; it is running now \(pid \d+\)/);
        expect(lost.stderr).toMatch(/wait for it to finish or cancel it/);
      }
      const after = (await target.listRestorePoints(ref)).map((p) => p.id);
      expect(after.slice(0, before.length)).toEqual(before);
      expect(after.length - before.length).toBe(won.length);
      const [snapshot] = (await source.listSnapshots('web')).slice(-1);
      expect(await digestOf(target, replica!.disks[0]!)).toBe(await digestOf(source, snapshot!.disks[0]!));
    }
    // Not asserted (process start-up decides), but reported: how often the two runs met.
    console.info(`two replikit processes: ${losers} of ${ROUNDS} rounds had a loser`);
  }, 300_000);
});
