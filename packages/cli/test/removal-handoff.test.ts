import { mkdtempSync } from 'node:fs';
import { readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createFileDriver } from '@replikit/driver-file';
import { afterAll, describe, expect, it } from 'vitest';
import { spawnCli, waitForExit } from './helpers/cli-harness.js';
import { createRandomVm, digestOf, guestChanges } from './helpers/file-vm.js';

const MiB = 1024 * 1024;
const dir = mkdtempSync(join(tmpdir(), 'replikit-handoff-'));
afterAll(() => rm(dir, { recursive: true, force: true }));

/** The `.deleting-` entries of a VM's snapshots folder, once none is left or after `seconds`. */
async function leftovers(folder: string, seconds: number): Promise<string[]> {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    const left = (await readdir(folder)).filter((name) => name.startsWith('.deleting-'));
    if (left.length === 0 || Date.now() > deadline) return left;
    await sleep(50); // the detached rm ends on its own schedule: poll for its result
  }
}

describe('replikit run as its own process', () => {
  it('leaves the merged snapshot data to a detached rm, which removes it', async () => {
    const vms = join(dir, 'vms');
    const disk = { id: 'd0', size: 8 * MiB };
    await createRandomVm(vms, 'web', [disk], 0.6);
    const job = join(dir, 'job.json');
    const target = { driver: 'file', root: join(dir, 'replicas') };
    await writeFile(
      job,
      JSON.stringify({ name: 'web', source: { driver: 'file', root: vms, vm: 'web' }, target, method: 'qhybrid' }),
    );
    for (let run = 0; run < 3; run++) {
      if (run > 0) await guestChanges(vms, 'web', disk, 0.1);
      const result = await waitForExit(spawnCli(['run', job], { cwd: dir }));
      expect(result.code, result.stderr).toBe(0);
    }
    // Runs 2 and 3 each merged the previous base snapshot away; its data was handed to rm.
    expect(await leftovers(join(vms, 'web', 'snapshots'), 30)).toEqual([]);
    const source = createFileDriver({ root: vms });
    const [snapshot] = await source.listSnapshots('web');
    const replicas = createFileDriver({ root: target.root });
    const [replica] = await replicas.listVMs();
    expect(await digestOf(replicas, replica!.disks[0]!)).toBe(await digestOf(source, snapshot!.disks[0]!));
  });
});
