// SIGKILL during a single-pass run: earlier backup versions stay restorable, and `resume`
// commits the interrupted run's version, which restores byte-identical to the replica.
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileStateStore, isTerminal } from '@replikit/core';
import { FileBlockStore } from '@replikit/dedup';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { killDuringTransfer, runCli } from './helpers/cli-harness.js';
import { createRandomVm, guestChanges } from './helpers/file-vm.js';

const MiB = 1024 * 1024;
const DISKS = [{ id: 'system', size: 8 * MiB }];
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'replikit-sp-crash-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const sha = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');

async function restoredDigest(store: FileBlockStore, version: string): Promise<string> {
  const out = join(dir, `${version}.raw`);
  await store.restore('guest', version, 'system', out);
  return sha(await readFile(out));
}

describe('SIGKILL during a single-pass backup', () => {
  it('leaves earlier versions restorable; resume commits the new one', async () => {
    await createRandomVm(join(dir, 'vms'), 'guest', DISKS, 0.8);
    await writeFile(
      join(dir, 'job.yaml'),
      stringify({
        name: 'spcrash',
        source: { driver: 'file', root: './vms', vm: 'guest' },
        target: { driver: 'file', root: './replicas' },
        method: 'qhybrid',
        options: { singlePass: true, bandwidthLimit: '6MB/s' },
      }),
    );
    expect((await runCli(['run', 'job.yaml'], { cwd: dir })).code).toBe(0);
    const store = new FileBlockStore(join(dir, '.replikit', 'store'));
    const [v1] = await store.list('guest');
    const v1Digest = sha(await readFile(join(dir, 'replicas', 'guest-replica', 'system.raw')));
    expect(await restoredDigest(store, v1!.id)).toBe(v1Digest);

    await guestChanges(join(dir, 'vms'), 'guest', DISKS[0]!, 0.7, 65536);
    expect((await killDuringTransfer(['run', 'job.yaml'], dir, 400)).killed).toBe(true);

    // Only the first version exists, and it is intact.
    expect((await store.list('guest')).map((v) => v.id)).toEqual([v1!.id]);
    expect((await store.verify('guest', v1!.id)).bad).toEqual([]);
    expect(await restoredDigest(store, v1!.id)).toBe(v1Digest);
    expect((await runCli(['backup', 'verify', 'guest', v1!.id], { cwd: dir })).code).toBe(0);

    const unfinished = (await new FileStateStore(join(dir, '.replikit')).listRuns()).find((r) => !isTerminal(r.state));
    expect(unfinished).toBeDefined();
    const resumed = await runCli(['resume', unfinished!.runId], { cwd: dir });
    expect(resumed.code, resumed.stderr).toBe(0);
    const versions = await store.list('guest');
    expect(versions.map((v) => v.id)).toEqual([v1!.id, unfinished!.runId]);
    const replica = sha(await readFile(join(dir, 'replicas', 'guest-replica', 'system.raw')));
    expect(await restoredDigest(store, unfinished!.runId)).toBe(replica);
    expect(await restoredDigest(store, v1!.id)).toBe(v1Digest);

    const listed = await runCli(['backup', 'list'], { cwd: dir });
    expect(listed.stdout).toContain(unfinished!.runId);
  }, 120_000);
});
