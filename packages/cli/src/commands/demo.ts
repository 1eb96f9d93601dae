import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { formatBytes, type JobSpecInput, parseJob, parseSize, type RunRecord } from '@replikit/core';
import { createFileDriver } from '@replikit/driver-file';
import { stringify as toYaml } from 'yaml';
import { UsageError } from '../cli-error.js';
import type { CliContext } from '../context.js';
import { createEngine } from '../create-engine.js';
import { createDemoVm, writeLikeAGuest } from '../demo/demo-data.js';
import { diskDigest } from '../demo/disk-digest.js';
import { renderRunSummary } from '../output/run-summary.js';
import { blockStoreOf } from './backup.js';
import { withProgress } from './run.js';

/** Options of `replikit demo`. */
export interface DemoOptions {
  /** Folder for the demo's VMs, replicas and state; a fresh temporary folder when not given. */
  dir?: string;
  /** Keep the folder afterwards. */
  keep?: boolean;
  /** Virtual size of the first disk. @default 512MiB */
  sizeA?: string;
  /** Virtual size of the second disk. @default 256MiB */
  sizeB?: string;
  /** Record a backup version in each run (single pass), then list the versions and restore one. */
  singlePass?: boolean;
}

const MARKER = '.replikit-demo';
const BLOCK = 64 * 1024;

async function prepareFolder(dir: string | undefined, cwd: string): Promise<string> {
  if (!dir) return mkdtemp(join(tmpdir(), 'replikit-demo-'));
  const path = resolve(cwd, dir);
  const entries = await readdir(path).catch(() => [] as string[]);
  if (entries.length > 0 && !entries.includes(MARKER)) {
    throw new UsageError(`--dir ${dir} is not empty and not a replikit demo folder; name a new or empty folder`);
  }
  await rm(path, { recursive: true, force: true });
  await mkdir(path, { recursive: true });
  return path;
}

async function verify(context: CliContext, record: RunRecord, roots: { vms: string; replicas: string }) {
  const source = createFileDriver({ root: roots.vms });
  const target = createFileDriver({ root: roots.replicas });
  let ok = true;
  try {
    for (const [i, disk] of record.snapshot!.disks.entries()) {
      const replicaDisk = record.replica!.disks[i]!;
      const [want, got] = await Promise.all([diskDigest(source, disk), diskDigest(target, replicaDisk)]);
      const same = want === got;
      ok &&= same;
      context.stdout.write(
        `  disk ${disk.id}: snapshot sha256 ${want.slice(0, 16)}…, replica ${got.slice(0, 16)}… ${same ? 'equal' : 'DIFFERENT'}\n`,
      );
    }
  } finally {
    await source.close();
    await target.close();
  }
  return ok;
}

/** Lists the backup versions the single-pass runs recorded, restores the newest, compares it with the replica. */
async function checkBackups(context: CliContext, stateDir: string, run: RunRecord, roots: { replicas: string }) {
  const out = context.stdout;
  const store = blockStoreOf(stateDir);
  const versions = await store.list(run.snapshot!.vmId);
  out.write(`\n5. backup versions recorded in the same pass (${store.dir})\n`);
  for (const version of versions) out.write(`   ${version.id}  ${version.createdAt}\n`);
  const newest = versions[versions.length - 1];
  if (!newest || newest.id !== run.backup?.version) {
    out.write('   the second run recorded no version: FAILED\n');
    return false;
  }
  const target = createFileDriver({ root: roots.replicas });
  let ok = true;
  try {
    for (const [i, disk] of newest.disks.entries()) {
      const file = join(stateDir, `restored-${disk.id}.raw`);
      await store.restore(newest.vm, newest.id, disk.id, file, { signal: context.signal });
      const [restored, replica] = await Promise.all([fileDigest(file), diskDigest(target, run.replica!.disks[i]!)]);
      const same = restored === replica;
      ok &&= same;
      out.write(
        `   restored disk ${disk.id} of ${newest.id}: sha256 ${restored.slice(0, 16)}…, replica ${replica.slice(0, 16)}… ${same ? 'equal' : 'DIFFERENT'}\n`,
      );
      await rm(file, { force: true });
    }
  } finally {
    await target.close();
  }
  return ok;
}

/** sha256 of a file, streamed. */
async function fileDigest(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 4 * 1024 * 1024 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/**
 * `replikit demo`: builds a VM with two disks (a realistic mix of zero, compressible and random
 * data), replicates it in full, changes about 2 % of its blocks as a guest would, replicates
 * again, and after each run checks that every replica disk equals the snapshot it came from.
 * Exit code 0 when both verifications pass, 1 otherwise.
 */
export async function demoCommand(context: CliContext, options: DemoOptions): Promise<number> {
  const sizeA = parseSize(options.sizeA ?? '512MiB', '--size-a');
  const sizeB = parseSize(options.sizeB ?? '256MiB', '--size-b');
  for (const [flag, size] of [
    ['--size-a', sizeA],
    ['--size-b', sizeB],
  ] as const) {
    if (size < 1024 * 1024) throw new UsageError(`${flag} must be at least 1 MiB`);
  }
  const dir = await prepareFolder(options.dir, context.cwd);
  const out = context.stdout;
  try {
    await writeFile(join(dir, MARKER), 'replikit demo folder: safe to delete\n');
    const roots = { vms: join(dir, 'vms'), replicas: join(dir, 'replicas') };
    await mkdir(roots.vms, { recursive: true });
    await mkdir(roots.replicas, { recursive: true });

    out.write(
      `replikit demo in ${dir}\n\n1. creating VM 'demo-vm': disk 'system' ${formatBytes(sizeA)}, disk 'data' ${formatBytes(sizeB)}\n`,
    );
    const images = await createDemoVm(roots.vms, sizeA, sizeB);
    for (const image of images) {
      const { layout } = image;
      out.write(
        `   ${image.id}: ${formatBytes(layout.random)} random, ${formatBytes(layout.compressible)} compressible, ${formatBytes(layout.zero)} zero\n`,
      );
    }

    const jobInput: JobSpecInput = {
      name: 'demo',
      source: { driver: 'file', root: './vms', vm: 'demo-vm' },
      target: { driver: 'file', root: './replicas', replicaName: 'demo-vm-replica' },
      method: 'qhybrid',
      blockSize: BLOCK,
      options: { retention: 3, replicationCache: true, singlePass: options.singlePass ?? false },
    };
    const jobFile = join(dir, 'demo-job.yaml');
    await writeFile(jobFile, toYaml(jobInput));
    const job = parseJob({
      ...jobInput,
      source: { ...jobInput.source, root: roots.vms },
      target: { ...jobInput.target, root: roots.replicas },
    });
    const engine = createEngine(join(dir, 'state'));

    out.write('\n2. first replication (full)\n');
    const first = await withProgress(engine, context, () => engine.run(job, { signal: context.signal }));
    out.write(`${renderRunSummary(first)}\n   verifying the replica against snapshot ${first.snapshot!.id}\n`);
    const firstOk = await verify(context, first, roots);

    let changed = 0;
    for (const [i, image] of images.entries()) {
      const disk = { root: roots.vms, name: 'demo-vm', diskId: image.id, size: image.size };
      changed += await writeLikeAGuest(disk, BLOCK, 0.02, 2000 + i);
    }
    const blocks = images.reduce((sum, image) => sum + Math.ceil(image.size / BLOCK), 0);
    out.write(
      `\n3. the guest wrote 4 KiB into ${changed} of ${blocks} blocks (${((changed / blocks) * 100).toFixed(1)} %)\n\n4. second replication (incremental)\n`,
    );
    const second = await withProgress(engine, context, () => engine.run(job, { signal: context.signal }));
    out.write(`${renderRunSummary(second)}\n   verifying the replica against snapshot ${second.snapshot!.id}\n`);
    const secondOk = await verify(context, second, roots);

    out.write(
      second.stats.bytesReadReplica === 0
        ? '   the replication cache was trusted: the incremental run read no replica block\n'
        : `   the incremental run read ${formatBytes(second.stats.bytesReadReplica)} of the replica (verified diff)\n`,
    );
    const backupOk = options.singlePass ? await checkBackups(context, join(dir, 'state'), second, roots) : true;
    const ratio = first.stats.bytesSent ? second.stats.bytesSent / first.stats.bytesSent : 0;
    out.write(
      `\nthe incremental run sent ${formatBytes(second.stats.bytesSent)}, ${(ratio * 100).toFixed(2)} % of the full run's ${formatBytes(first.stats.bytesSent)}\n`,
    );
    const ok = firstOk && secondOk && backupOk;
    out.write(
      ok
        ? 'verification passed: every replica disk equals the source snapshot it came from\n'
        : 'verification FAILED: a replica disk differs from its source snapshot\n',
    );
    if (options.keep) out.write(`the demo's files are kept in ${dir} (job file: ${jobFile})\n`);
    return ok ? 0 : 1;
  } finally {
    if (!options.keep) await rm(dir, { recursive: true, force: true });
  }
}
