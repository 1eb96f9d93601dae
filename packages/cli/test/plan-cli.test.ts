// `replikit plan` predicts the next run without touching anything, and `run`/`runs` say why each
// disk was replicated the way it was.
import { createHash, randomFillSync } from 'node:crypto';
import { mkdtemp, open, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RunForecast, RunRecord } from '@replikit/core';
import { createFileDriver, createFileVM, writeGuestDisk } from '@replikit/driver-file';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { runCli } from './helpers/cli-harness.js';

const MiB = 1024 * 1024;
const BLOCK = 65536;
let dir: string;
let jobPath: string;

/** A digest of every file under `root` (paths, sizes and bytes): equal digests, byte-identical trees. */
async function treeDigest(root: string): Promise<string> {
  const hash = createHash('sha256');
  const walk = async (at: string): Promise<void> => {
    for (const entry of (await readdir(at, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
      const path = join(at, entry.name);
      hash.update(`${path.slice(root.length)}\0`);
      if (entry.isDirectory()) await walk(path);
      else if (entry.isFile()) hash.update(await readFile(path));
    }
  };
  await walk(root);
  return hash.digest('hex');
}

const trees = () => Promise.all(['.replikit', 'vms', 'replicas'].map((d) => treeDigest(join(dir, d))));

async function plan(): Promise<{ code: number; forecast: RunForecast }> {
  const { code, stdout } = await runCli(['plan', jobPath, '--json'], { cwd: dir });
  return { code, forecast: JSON.parse(stdout) as RunForecast };
}

async function lastRun(): Promise<RunRecord> {
  const { stdout } = await runCli(['runs', '--json'], { cwd: dir });
  return (JSON.parse(stdout) as RunRecord[]).at(-1)!;
}

/** Guest writes of random data at `offsets` (tracked by the file driver). */
async function guestWrites(offsets: number[]): Promise<void> {
  for (const offset of offsets) {
    await writeGuestDisk(join(dir, 'vms'), 'web', 'system', offset, randomFillSync(new Uint8Array(5000)));
  }
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'replikit-plan-'));
  await createFileVM(join(dir, 'vms'), {
    name: 'web',
    disks: [{ id: 'system', size: 4 * MiB }],
    changeTracking: true,
  });
  await guestWrites([0, MiB]);
  jobPath = join(dir, 'job.yaml');
  await writeFile(
    jobPath,
    stringify({
      name: 'plan',
      source: { driver: 'file', root: './vms', vm: 'web' },
      target: { driver: 'file', root: './replicas' },
      method: 'qhybrid',
      blockSize: BLOCK,
      options: { replicationCache: true },
    }),
  );
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('replikit plan', () => {
  it('predicts the tracked blocks of the next run exactly and changes nothing', async () => {
    const first = await plan();
    expect(first.code).toBe(0);
    expect(first.forecast.disks[0]).toMatchObject({ mode: 'full', reason: { code: 'FIRST_SEED' } });
    expect((await runCli(['run', jobPath], { cwd: dir })).code).toBe(0);
    // Six writes, two of them across a block boundary: 8 blocks.
    await guestWrites([3 * BLOCK, 10 * BLOCK + 100, 20 * BLOCK - 10, 33 * BLOCK, 40 * BLOCK - 2000, 60 * BLOCK]);

    const before = await trees();
    const { code, forecast } = await plan();
    expect(await trees()).toEqual(before);
    expect(code).toBe(0);
    expect(forecast.canRun).toBe(true);
    expect(forecast.disks[0]).toMatchObject({
      mode: 'tracked',
      digestSource: 'cache',
      reason: { code: 'TRACKED' },
      basis: 'exact',
      blocksToRead: 8,
      blocksChanged: 8,
    });
    expect(forecast.etaSeconds).toBeGreaterThanOrEqual(0);
    expect(forecast.restorePoints).toEqual({ create: 1, prune: [] });

    const run = await runCli(['run', jobPath], { cwd: dir });
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('TRACKED');
    const record = await lastRun();
    expect(record.disks[0]!.reason?.code).toBe('TRACKED');
    expect(record.stats.blocksScanned).toBe(forecast.disks[0]!.blocksToRead);
    expect(record.stats.blocksChanged).toBe(forecast.disks[0]!.blocksChanged);
    expect((await runCli(['runs'], { cwd: dir })).stdout).toMatch(/completed.*TRACKED/);
  });

  it('after an outside write already says TRACKING_RESET and predicts the full read', async () => {
    await runCli(['run', jobPath], { cwd: dir });
    await guestWrites([5 * BLOCK]);
    await runCli(['run', jobPath], { cwd: dir });
    const handle = await open(join(dir, 'vms', 'web', 'system.raw'), 'r+');
    await handle.write(randomFillSync(Buffer.alloc(4096)), 0, 4096, 2 * MiB);
    await handle.close();

    const before = await trees();
    const { code, forecast } = await plan();
    expect(await trees()).toEqual(before);
    expect(code).toBe(0);
    expect(forecast.disks[0]).toMatchObject({
      mode: 'hash-diff',
      reason: { code: 'TRACKING_RESET' },
      blocksToRead: (4 * MiB) / BLOCK,
    });

    const run = await runCli(['run', jobPath], { cwd: dir });
    expect(run.code).toBe(0);
    expect(run.stderr).toContain('W_RUN_MORE_EXPENSIVE');
    const record = await lastRun();
    expect(record.disks[0]!.reason?.code).toBe('TRACKING_RESET');
    expect(record.stats.blocksScanned).toBe(forecast.disks[0]!.blocksToRead);
  });

  it('exits 2 naming the blocker when the replica is running; run --full says FORCED', async () => {
    await runCli(['run', jobPath], { cwd: dir });
    const target = createFileDriver({ root: join(dir, 'replicas') });
    await target.power('web-replica', 'start');
    const blocked = await runCli(['plan', jobPath], { cwd: dir });
    expect(blocked.code).toBe(2);
    expect(blocked.stdout).toMatch(/blocked REPLICA_RUNNING: replica 'web-replica' is running/);
    await target.power('web-replica', 'shutdown');

    const forced = await runCli(['run', jobPath, '--full'], { cwd: dir });
    expect(forced.code).toBe(0);
    expect(forced.stdout).toMatch(/system\s+full\s+FORCED/);
    const record = await lastRun();
    expect(record.disks[0]!.reason?.code).toBe('FORCED');
  });
});
