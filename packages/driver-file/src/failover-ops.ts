import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { hostname } from 'node:os';
import { dirname, join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import {
  type CloneInfo,
  type CloneOptions,
  ConflictError,
  FailedOverError,
  isReplikitError,
  NotFoundError,
  type ReplicaFailoverMark,
  type RestorePoint,
  throwIfAborted,
  toStorageError,
} from '@replikit/core';
import { fsyncDir, writeJsonAtomic } from './atomic-write.js';
import { createVmFolder } from './create-file-vm.js';
import { folderMutex } from './locks.js';
import { isSafeName } from './names.js';
import { diskImagePath, type FileVmPaths, fileVmPaths } from './paths.js';
import {
  assertNoMarker,
  assertReplica,
  type FaultHook,
  hasMarker,
  overlaySizes,
  recoverReplica,
} from './replica-commit.js';
import { dropOwner, takeOwner } from './replica-owner.js';
import { readPoints } from './restore-points.js';
import { copyDiskImage } from './sparse-copy.js';
import { readVmJson, type VmJson, writeVmJson } from './vm-metadata.js';

/** What the failover operations of the file driver need besides the replica's paths. */
export interface FailoverOpsContext {
  /** Try copy-on-write clones first. */
  reflink: boolean;
  /** Crash-test hook. */
  faultHook?: FaultHook | undefined;
}

/** The folder holding the copy of a promoted replica's disks at its point: `<dir>/failover-base`. */
function baseDir(paths: FileVmPaths): string {
  return join(paths.dir, 'failover-base');
}

/** Written once every disk's base copy is durable. */
function baseDone(paths: FileVmPaths): string {
  return join(baseDir(paths), 'complete.json');
}

async function exists(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined)) !== undefined;
}

/**
 * Runs `fn` while the replica is held by its failover pseudo-run (`failover-<replica>`): no run can
 * claim it meanwhile, and a run that holds it makes this reject with `E_CONFLICT`. The same
 * pseudo-run re-takes a hold a crashed failover left.
 */
async function withFailoverHold<T>(paths: FileVmPaths, replicaId: string, fn: () => Promise<T>): Promise<T> {
  const runId = `failover-${replicaId}`;
  const holder = await takeOwner(paths, {
    runId,
    host: hostname(),
    pid: process.pid,
    startedAt: new Date().toISOString(),
  });
  if (holder.runId !== runId) {
    throw new ConflictError(
      `replica '${replicaId}' is held by run ${holder.runId} (host ${holder.host}, pid ${holder.pid}); finish, roll back or abandon that run ('replikit resume') before failing over`,
      { details: { owner: holder } },
    );
  }
  try {
    return await fn();
  } finally {
    await dropOwner(paths, runId);
  }
}

/** Rewrites vm.json under the folder mutex with `change` applied to what is there now. */
async function updateVm(paths: FileVmPaths, change: (vm: VmJson) => VmJson): Promise<VmJson> {
  return folderMutex.run(paths.dir, async () => {
    const next = change(await readVmJson(paths.dir));
    await writeVmJson(paths.dir, next);
    return next;
  });
}

/** Replaces `dst` by a durable copy of `src` (through a temporary file and a rename). */
async function replaceWithCopy(src: string, dst: string, size: number, ctx: FailoverOpsContext): Promise<void> {
  const tmp = `${dst}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    await copyDiskImage(src, tmp, size, { reflink: ctx.reflink });
    await rename(tmp, dst);
    await fsyncDir(dirname(dst));
  } catch (error) {
    await rm(tmp, { force: true });
    throw toStorageError(error, `copying ${src} to ${dst}`);
  }
}

/** See `FailoverHooks.failoverMark`. */
export async function failoverMarkOf(paths: FileVmPaths): Promise<ReplicaFailoverMark> {
  const vm = await readVmJson(paths.dir);
  assertReplica(paths, vm);
  const f = vm.replica!.failover;
  if (!f) return { state: 'replica' };
  return { state: f.state === 'committed' ? 'committed' : 'promoted', pointId: f.pointId };
}

/** Refuses a run's claim or writer on a replica that is failed over (or being promoted). */
export function assertNotFailedOver(vm: VmJson, replicaId: string): void {
  const f = vm.replica?.failover;
  if (!f) return;
  throw new FailedOverError(
    `replica '${replicaId}' is failed over (${f.state} at restore point ${f.pointId}); no run writes it until 'replikit failover undo' returns it to replicating`,
    { details: { state: f.state, pointId: f.pointId } },
  );
}

/** See `FailoverHooks.promoteReplica`. */
export async function promoteReplica(
  paths: FileVmPaths,
  replicaId: string,
  point: RestorePoint,
  ctx: FailoverOpsContext,
): Promise<void> {
  await recoverReplica(paths, { faultHook: ctx.faultHook });
  const first = await readVmJson(paths.dir);
  assertReplica(paths, first);
  const f = first.replica!.failover;
  if (f && (f.state !== 'promoting' || f.pointId !== point.id)) {
    if (f.state === 'promoted' && f.pointId === point.id) return; // done already
    throw new FailedOverError(
      `replica '${replicaId}' is already failed over (${f.state} at restore point ${f.pointId}); undo that first`,
      { details: { state: f.state, pointId: f.pointId } },
    );
  }
  await withFailoverHold(paths, replicaId, async () => {
    let vm = await readVmJson(paths.dir);
    if (!vm.replica!.failover) {
      await assertNoMarker(paths, vm);
      for (const size of (await overlaySizes(paths, vm)).values()) {
        if (size > 0) {
          throw new ConflictError(
            `replica '${replicaId}' has writes pending from an unfinished run; resume or roll back that run before failing over`,
          );
        }
      }
      const points = await readPoints(paths.restorePoints);
      const newest = points[points.length - 1];
      if (newest?.id !== point.id) {
        throw new ConflictError(
          `restore point ${point.id} is not the newest of replica '${replicaId}' (${newest?.id ?? 'none'}); revert to it first`,
          { details: { pointId: point.id, newest: newest?.id } },
        );
      }
      if (vm.powerState === 'running') {
        throw new ConflictError(`replica '${replicaId}' is running although it is not failed over; shut it down first`);
      }
      vm = await updateVm(paths, (now) => ({
        ...now,
        replica: { ...now.replica!, failover: { state: 'promoting', pointId: point.id } },
      }));
      await ctx.faultHook?.('promote:flagged');
      // Anything a crashed promotion or undo left is stale: start the copy afresh.
      await rm(baseDir(paths), { recursive: true, force: true });
    }
    if (!(await exists(baseDone(paths)))) {
      await mkdir(baseDir(paths), { recursive: true });
      for (const disk of vm.disks) {
        await replaceWithCopy(diskImagePath(paths.dir, disk.file), join(baseDir(paths), disk.file), disk.size, ctx);
        await ctx.faultHook?.('promote:base-disk-copied');
      }
      await writeJsonAtomic(baseDone(paths), { pointId: point.id, files: vm.disks.map((d) => d.file) });
      await fsyncDir(paths.dir);
      await ctx.faultHook?.('promote:base-complete');
    }
    // One atomic write: promoted and started (a boot, as `power` counts it).
    await updateVm(paths, (now) => ({
      ...now,
      powerState: 'running',
      bootCount: now.bootCount + 1,
      replica: { ...now.replica!, failover: { state: 'promoted', pointId: point.id } },
    }));
    await ctx.faultHook?.('promote:started');
  });
}

/** See `FailoverHooks.demoteReplica`. */
export async function demoteReplica(paths: FileVmPaths, replicaId: string, ctx: FailoverOpsContext): Promise<void> {
  const first = await readVmJson(paths.dir);
  assertReplica(paths, first);
  const f = first.replica!.failover;
  if (!f) {
    // An ordinary replica already. A demote killed after it cleared the flag left its failover
    // hold (a dead process's): drop it, or the job's next run would be refused.
    await dropOwner(paths, `failover-${replicaId}`);
    await rm(baseDir(paths), { recursive: true, force: true });
    return;
  }
  if (f.state === 'committed') {
    throw new FailedOverError(
      `replica '${replicaId}' is failed over and committed; it cannot return to restore point ${f.pointId}`,
      { details: { state: f.state, pointId: f.pointId } },
    );
  }
  await withFailoverHold(paths, replicaId, async () => {
    const vm = await updateVm(paths, (now) => ({ ...now, powerState: 'stopped' }));
    await ctx.faultHook?.('demote:stopped');
    if (await exists(baseDone(paths))) {
      for (const disk of vm.disks) {
        await replaceWithCopy(join(baseDir(paths), disk.file), diskImagePath(paths.dir, disk.file), disk.size, ctx);
        await ctx.faultHook?.('demote:disk-restored');
      }
    }
    // Without a complete base the replica never started: its images are still the point's.
    await updateVm(paths, (now) => {
      const { failover: _dropped, ...replica } = now.replica!;
      return { ...now, powerState: 'stopped', replica: { ...replica, state: 'ready' } };
    });
    await ctx.faultHook?.('demote:flag-cleared');
    await rm(baseDir(paths), { recursive: true, force: true });
  });
}

/** See `FailoverHooks.commitFailover`. */
export async function commitFailover(paths: FileVmPaths, replicaId: string): Promise<void> {
  const vm = await readVmJson(paths.dir);
  assertReplica(paths, vm);
  const f = vm.replica!.failover;
  if (!f || f.state === 'promoting') {
    throw new FailedOverError(
      `replica '${replicaId}' is not failed over${f ? ' yet (its promotion did not finish)' : ''}; there is nothing to commit`,
      { details: { state: f?.state ?? 'replica' } },
    );
  }
  if (f.state !== 'committed') {
    await updateVm(paths, (now) => ({ ...now, replica: { ...now.replica!, failover: { ...f, state: 'committed' } } }));
  }
  await rm(baseDir(paths), { recursive: true, force: true });
}

/** See `FailoverHooks.retireReplica`. */
export async function retireReplica(paths: FileVmPaths, replicaId: string): Promise<void> {
  const vm = await readVmJson(paths.dir);
  if (!vm.replica) return; // retired already
  if (vm.replica.failover?.state !== 'committed') {
    throw new FailedOverError(
      `replica '${replicaId}' must be failed over and committed before it is retired (state: ${vm.replica.failover?.state ?? 'replica'})`,
      { details: { state: vm.replica.failover?.state ?? 'replica' } },
    );
  }
  await updateVm(paths, (now) => {
    const { replica: _dropped, ...plain } = now;
    return plain;
  });
  // What only a replica needs goes: restore points, undo files, a stale hold.
  for (const leftover of [paths.restorePoints, paths.undo, join(paths.dir, 'owner.json'), baseDir(paths)]) {
    await rm(leftover, { recursive: true, force: true });
  }
  await fsyncDir(paths.dir);
}

/** See `FailoverHooks.cloneRestorePoint`; `replicaPaths` is the replica's folder, the clone goes beside it. */
export async function cloneRestorePoint(
  replicaPaths: FileVmPaths,
  replicaId: string,
  point: RestorePoint,
  options: CloneOptions,
  ctx: FailoverOpsContext,
): Promise<CloneInfo> {
  const root = dirname(replicaPaths.dir);
  const clonePaths = fileVmPaths(root, options.name);
  const found = await readVmJson(clonePaths.dir).catch((error: unknown) => {
    if (isReplikitError(error, 'E_NOT_FOUND')) return undefined;
    throw error;
  });
  if (found) {
    if (found.clone?.replicaId !== replicaId || found.clone.pointId !== point.id) {
      throw new ConflictError(
        `a VM named '${options.name}' exists at ${clonePaths.dir} and is not a clone of restore point ${point.id} of replica '${replicaId}'; pick another name`,
      );
    }
    return toCloneInfo(options.name, found);
  }
  await recoverReplica(replicaPaths, { faultHook: ctx.faultHook });
  const replica = await readVmJson(replicaPaths.dir);
  assertReplica(replicaPaths, replica);
  const points = await readPoints(replicaPaths.restorePoints);
  if (!points.some((p) => p.id === point.id)) {
    throw new NotFoundError(`replica '${replicaId}' has no restore point ${point.id}`, {
      details: { pointId: point.id },
    });
  }
  if (points[points.length - 1]!.id !== point.id) {
    throw new ConflictError(
      `the file driver clones only the newest restore point of replica '${replicaId}' (${points[points.length - 1]!.id}), not ${point.id}`,
      { details: { pointId: point.id, newest: points[points.length - 1]!.id } },
    );
  }
  if (replica.replica!.failover) assertNotFailedOver(replica, replicaId);
  const network = options.network ?? { mode: 'isolated' };
  const networks =
    network.mode === 'isolated'
      ? []
      : (replica.networks ?? []).flatMap((n) => (network.map[n] === undefined ? [] : [String(network.map[n])]));
  const cloneVm: VmJson = {
    name: options.name,
    cpus: replica.cpus,
    memoryMiB: replica.memoryMiB,
    networks,
    disks: replica.disks.map((d) => ({ ...d })),
    powerState: 'stopped',
    bootCount: 0,
    clone: { replicaId, pointId: point.id, operationId: options.operationId, createdAt: new Date().toISOString() },
  };
  // The replica's images are its newest point. They are copied without a lock, so that a run's
  // commit is never refused meanwhile: the copy counts only when no commit or revert marker was
  // there before or after it and the write generation did not move (images change only while a
  // marker exists, and every commit or revert moves the generation).
  for (let attempt = 0; ; attempt++) {
    const generation = await stableGeneration(replicaPaths);
    if (generation === undefined) {
      // A commit or revert is being applied by another process: give it a moment.
      if (attempt >= 20) throw new ConflictError(`replica '${replicaId}' is being committed or reverted; retry`);
      await delay(100);
      continue;
    }
    await createVmFolder(root, clonePaths.dir, cloneVm, async (disk, path) => {
      throwIfAborted(options.signal);
      await copyDiskImage(diskImagePath(replicaPaths.dir, disk.file), path, disk.size, {
        reflink: ctx.reflink,
        ...(options.signal ? { signal: options.signal } : {}),
      });
    });
    await ctx.faultHook?.('clone:copied');
    const points = await readPoints(replicaPaths.restorePoints);
    const newest = points[points.length - 1]?.id;
    if ((await stableGeneration(replicaPaths)) === generation && newest === point.id) break;
    await destroyClone(root, options.name, { reflink: ctx.reflink });
    if (newest !== point.id || attempt >= 4) {
      throw new ConflictError(
        newest !== point.id
          ? `a run committed restore point ${newest} of replica '${replicaId}' while ${point.id} was being cloned; clone the newest`
          : `replica '${replicaId}' kept changing while it was cloned; retry`,
        { details: { pointId: point.id, newest } },
      );
    }
  }
  await ctx.faultHook?.('clone:created');
  return toCloneInfo(options.name, cloneVm);
}

/**
 * The replica's write generation, or `undefined` while a commit or revert marker is there (its
 * images may be changing).
 */
async function stableGeneration(paths: FileVmPaths): Promise<number | undefined> {
  if (await hasMarker(paths)) return undefined;
  return (await readVmJson(paths.dir)).replica?.writeGeneration;
}

/** See `FailoverHooks.destroyClone`. */
export async function destroyClone(root: string, cloneId: string, ctx: FailoverOpsContext): Promise<void> {
  const paths = fileVmPaths(root, cloneId);
  let vm: VmJson;
  try {
    vm = await readVmJson(paths.dir);
  } catch (error) {
    if (isReplikitError(error, 'E_NOT_FOUND')) return; // gone already
    throw error;
  }
  if (!vm.clone) {
    throw new ConflictError(`VM '${cloneId}' is not a clone made by a test failover; it is not deleted`, {
      details: { vmId: cloneId },
    });
  }
  const doomed = join(root, `.deleting-${process.pid}-${cloneId}-${randomBytes(4).toString('hex')}`);
  try {
    await rename(paths.dir, doomed);
    await fsyncDir(root);
    await rm(doomed, { recursive: true, force: true });
  } catch (error) {
    throw toStorageError(error, `deleting clone '${cloneId}'`);
  }
  await ctx.faultHook?.('clone:destroyed');
}

/** See `FailoverHooks.listClones`: the clones under `root`, of `replicaId` when given, oldest first. */
export async function listClones(root: string, replicaId?: string): Promise<CloneInfo[]> {
  const entries = await readdir(root).catch((error: unknown) => {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [] as string[];
    throw toStorageError(error, `listing ${root}`);
  });
  const clones: CloneInfo[] = [];
  for (const entry of entries.filter(isSafeName).sort()) {
    const text = await readFile(join(root, entry, 'vm.json'), 'utf8').catch(() => undefined);
    if (text === undefined || !text.includes('"clone"')) continue;
    const vm = await readVmJson(join(root, entry)).catch(() => undefined);
    if (!vm?.clone || (replicaId !== undefined && vm.clone.replicaId !== replicaId)) continue;
    clones.push(toCloneInfo(entry, vm));
  }
  return clones.sort((a, b) => a.createdAt.localeCompare(b.createdAt));
}

function toCloneInfo(id: string, vm: VmJson): CloneInfo {
  return {
    id,
    name: vm.name,
    replicaId: vm.clone!.replicaId,
    pointId: vm.clone!.pointId,
    operationId: vm.clone!.operationId,
    createdAt: vm.clone!.createdAt,
    powerState: vm.powerState,
    networks: [...(vm.networks ?? [])],
  };
}
