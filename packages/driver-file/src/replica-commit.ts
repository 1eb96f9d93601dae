import { type FileHandle, mkdir, readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import {
  type Extent,
  FormatError,
  InputError,
  NotFoundError,
  ReplicaInProgressError,
  type RestorePointOptions,
  type TargetFence,
  throwIfAborted,
  toStorageError,
} from '@replikit/core';
import { fsyncDir, writeJsonAtomic } from './atomic-write.js';
import { IO_CHUNK, isAllZero, readFully, writevFully } from './block-io.js';
import { assertRealFolders, flagsOf, openDataFile, READ_WRITE } from './data-file.js';
import { newSortableId } from './ids.js';
import { acquireLockFile, folderMutex, type LockHandle } from './locks.js';
import { isSafeName } from './names.js';
import { encodeRecordHeader, mergeRanges, walkRecords } from './overlay-log.js';
import { diskImagePath, diskLockPath, type FileVmPaths, overlayPath, undoDir, undoPath } from './paths.js';
import { checkAndRaiseFence } from './replica-fence.js';
import { type PointRecord, readPoints, writePoints } from './restore-points.js';
import { readVmJson, type VmJson, writeVmJson } from './vm-metadata.js';

/**
 * Named instants of a commit, a revert, a snapshot or a snapshot merge at which tests inject a crash (see
 * `FileDriverOptions.faultHook`). Each one is reached after the step it names is durable.
 */
export type FaultPoint =
  | 'commit:undo-written'
  | 'commit:marker-written'
  | 'commit:record-applied'
  | 'commit:applied'
  | 'commit:points-written'
  | 'commit:vm-written'
  | 'commit:overlays-deleted'
  | 'revert:marker-written'
  | 'revert:overlays-deleted'
  | 'revert:record-applied'
  | 'revert:undo-applied'
  | 'revert:points-written'
  | 'snapshot:copied'
  | 'snapshot:committed'
  | 'snapshot:tracking-reset'
  | 'delete:tracking-folded'
  | 'merge:journal-written'
  | 'merge:copied'
  | 'merge:switched'
  | 'merge:dropped'
  | 'promote:flagged'
  | 'promote:base-disk-copied'
  | 'promote:base-complete'
  | 'promote:started'
  | 'demote:stopped'
  | 'demote:disk-restored'
  | 'demote:flag-cleared'
  | 'clone:copied'
  | 'clone:created'
  | 'clone:destroyed';

/** Called at each {@link FaultPoint}; a test makes it throw or kill the process. */
export type FaultHook = (point: FaultPoint) => void | Promise<void>;

/** `commit.json`: a commit whose undo files are durable and whose overlays are being applied. */
export interface CommitMarker {
  /** Always `commit`. */
  kind: 'commit';
  /** The restore point the commit creates. */
  pointId: string;
  /** Its label. */
  label: string;
  /** Its ISO 8601 creation time. */
  createdAt: string;
  /** The replica's writeGeneration once committed. */
  generation: number;
  /** Keep at most this many points. */
  retention?: number;
  /** The newest point before this commit (absent for the first point: nothing to roll back to). */
  previousPointId?: string;
  /** Per disk file: how many bytes of its overlay are valid records to apply. */
  disks: Array<{ file: string; overlayLength: number }>;
  /** Disk files with an undo file in `undo/<pointId>/`. */
  undoFiles: string[];
}

/** `revert.json`: a revert that applies undo files, newest point first, down to `pointId`. */
export interface RevertMarker {
  /** Always `revert`. */
  kind: 'revert';
  /** The point the replica returns to. */
  pointId: string;
  /** The replica's writeGeneration once reverted. */
  generation: number;
  /** Undo steps, newest first: applying `undo/<step.pointId>/*` takes the replica to the point before it. */
  steps: Array<{ pointId: string; undoFiles: string[] }>;
}

/** Options shared by commit and revert. */
export interface ReplicaOpOptions {
  /** Cancels the operation while it can still be cancelled cleanly. */
  signal?: AbortSignal;
  /** Crash injection for tests. */
  faultHook?: FaultHook;
  /** The lease epoch the operation is made under: refused when the replica has seen a higher one. */
  fence?: TargetFence;
}

/**
 * Runs `fn` with exclusive use of the replica: the in-process folder mutex, the replica lock file
 * and the writer lock of every disk (so no writer, of this process or another, is open).
 *
 * @throws {@link @replikit/core!ConflictError} when a writer is open or another process works on the replica.
 */
export async function withReplicaExclusive<T>(paths: FileVmPaths, vm: VmJson, fn: () => Promise<T>): Promise<T> {
  return folderMutex.run(paths.dir, async () => {
    const locks: LockHandle[] = [];
    try {
      locks.push(await acquireLockFile(paths.replicaLock, `replica ${paths.dir}`));
      for (const disk of vm.disks) {
        locks.push(
          await acquireLockFile(
            diskLockPath(paths.dir, disk.file),
            `disk '${disk.id}' of replica '${vm.name}' (a writer is open)`,
          ),
        );
      }
      return await fn();
    } finally {
      for (const lock of locks.reverse()) await lock.release();
    }
  });
}

/** True when a commit or revert marker is left in the replica folder. */
export async function hasMarker(paths: FileVmPaths): Promise<boolean> {
  return (await exists(paths.commitMarker)) || (await exists(paths.revertMarker));
}

/**
 * Finishes a commit or revert that a crash interrupted: a leftover `revert.json` is completed,
 * a leftover `commit.json` is rolled forward (its overlays
 * re-applied, which is idempotent). Does nothing when there is no marker.
 */
export async function recoverReplica(paths: FileVmPaths, options: ReplicaOpOptions = {}): Promise<void> {
  if (!(await hasMarker(paths))) return;
  const vm = await readVmJson(paths.dir);
  await withReplicaExclusive(paths, vm, () => finishMarkersLocked(paths, options));
}

async function finishMarkersLocked(paths: FileVmPaths, options: ReplicaOpOptions): Promise<void> {
  const revert = await readMarker<RevertMarker>(paths.revertMarker, 'revert');
  if (revert) {
    await finishRevert(paths, revert, options);
    return;
  }
  const commit = await readMarker<CommitMarker>(paths.commitMarker, 'commit');
  if (commit) await finishCommit(paths, commit, options);
}

/**
 * Bytes in each disk's overlay (0 when it has none), by disk file. Used to tell whether writes are
 * pending since the last restore point.
 */
export async function overlaySizes(paths: FileVmPaths, vm: VmJson): Promise<Map<string, number>> {
  const sizes = new Map<string, number>();
  for (const disk of vm.disks) {
    const s = await stat(overlayPath(paths.dir, disk.file)).catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return undefined;
      throw toStorageError(error, `reading the overlay of disk '${disk.id}'`);
    });
    sizes.set(disk.file, s?.size ?? 0);
  }
  return sizes;
}

/**
 * Creates a restore point: makes every write since the last point part of the replica's base
 * images, crash-safely.
 *
 * - Without restore points (direct mode: writes went straight into the images) it fsyncs the
 *   images and records the first point.
 * - With restore points, for each disk with an overlay: the current base content of every range the
 *   overlay touches goes into an undo file (fsynced), then `commit.json` is written, the overlay is
 *   applied in order into the base image (fsynced), the point is recorded, vm.json gets the next
 *   `writeGeneration` and state `ready`, and the overlays and the marker are deleted.
 *
 * Idempotent per label: when the newest point has `label` and nothing is pending, it is returned.
 * `signal` is honoured until the marker is written; after that the commit always completes.
 */
export async function commitReplica(
  paths: FileVmPaths,
  label: string,
  options: RestorePointOptions & ReplicaOpOptions = {},
): Promise<PointRecord> {
  if (typeof label !== 'string' || label.length === 0 || label.length > 1000) {
    throw new InputError('a restore point label must be a non-empty string of at most 1000 characters');
  }
  const { retention } = options;
  if (retention !== undefined && (!Number.isSafeInteger(retention) || retention < 1)) {
    throw new InputError(`retention must be a whole number ≥ 1, got ${retention}`);
  }
  const vm0 = await readVmJson(paths.dir);
  assertReplica(paths, vm0);
  return withReplicaExclusive(paths, vm0, async () => {
    // Under the replica's lock, before anything changes: a stale lease holder commits nothing.
    await checkAndRaiseFence(paths, options.fence, `the commit of restore point '${label}'`);
    await finishMarkersLocked(paths, options);
    const vm = await readVmJson(paths.dir);
    const points = await readPoints(paths.restorePoints);
    await collectUndoGarbage(paths, points);
    const pending: Array<{ file: string; overlayLength: number; ranges: Extent[] }> = [];
    for (const disk of vm.disks) {
      const scan = await scanOverlay(paths, disk.file, disk.size, true);
      if (scan.validEnd > 0) pending.push({ file: disk.file, overlayLength: scan.validEnd, ranges: scan.ranges });
    }
    const newest = points.at(-1);
    if (newest && newest.label === label && pending.length === 0) {
      if (vm.replica!.state !== 'ready')
        await writeVmJson(paths.dir, { ...vm, replica: { ...vm.replica!, state: 'ready' } });
      return newest;
    }
    const pointId = newSortableId(
      'rp',
      points.map((p) => p.id),
    );
    const undoFiles: string[] = [];
    if (newest && pending.length > 0) {
      const folder = undoDir(paths.dir, pointId);
      try {
        await mkdir(folder, { recursive: true });
        await assertRealFolders(paths.dir, folder, 'undo files'); // a link would put them outside
        for (const p of pending) {
          const disk = vm.disks.find((d) => d.file === p.file)!;
          await writeUndo(
            diskImagePath(paths.dir, p.file),
            undoPath(paths.dir, pointId, p.file),
            mergeRanges(p.ranges),
            {
              diskSize: disk.size,
              signal: options.signal,
            },
          );
          undoFiles.push(p.file);
        }
        await fsyncDir(folder);
        await fsyncDir(paths.undo);
        await fsyncDir(paths.dir);
        await options.faultHook?.('commit:undo-written');
        throwIfAborted(options.signal);
      } catch (error) {
        await rm(folder, { recursive: true, force: true });
        throw toStorageError(error, `writing the undo files of replica '${vm.name}'`);
      }
    }
    const marker: CommitMarker = {
      kind: 'commit',
      pointId,
      label,
      createdAt: new Date().toISOString(),
      generation: vm.replica!.writeGeneration + 1,
      ...(retention === undefined ? {} : { retention }),
      ...(newest ? { previousPointId: newest.id } : {}),
      disks: vm.disks.map((d) => ({
        file: d.file,
        overlayLength: pending.find((p) => p.file === d.file)?.overlayLength ?? 0,
      })),
      undoFiles,
    };
    try {
      await writeJsonAtomic(paths.commitMarker, marker);
    } catch (error) {
      await rm(undoDir(paths.dir, pointId), { recursive: true, force: true });
      throw error;
    }
    await options.faultHook?.('commit:marker-written');
    return finishCommit(paths, marker, options);
  });
}

/**
 * Completes a commit from its marker. Idempotent: every step writes fixed content, so running it
 * again after a crash at any instant gives the same result.
 */
async function finishCommit(paths: FileVmPaths, marker: CommitMarker, options: ReplicaOpOptions): Promise<PointRecord> {
  const vm = await readVmJson(paths.dir);
  const hook = options.faultHook;
  for (const disk of vm.disks) {
    const overlayLength = marker.disks.find((d) => d.file === disk.file)?.overlayLength ?? 0;
    const basePath = diskImagePath(paths.dir, disk.file);
    await withFile(basePath, 'r+', `committing disk '${disk.id}'`, async (base) => {
      if (overlayLength > 0) {
        await withFile(overlayPath(paths.dir, disk.file), 'r', `committing disk '${disk.id}'`, (overlay) =>
          walkRecords(overlay, {
            end: overlayLength,
            diskSize: disk.size,
            applyTo: base,
            what: `overlay of disk '${disk.id}'`,
            afterRecord: hook && (() => hook('commit:record-applied')),
          }),
        ).catch((error: unknown) => {
          // A missing overlay means it was applied and deleted before the crash.
          if ((error as { code?: string }).code === 'E_NOT_FOUND') return undefined;
          throw error;
        });
      }
      await base.sync();
    });
  }
  await hook?.('commit:applied');
  let points = await readPoints(paths.restorePoints);
  let record = points.find((p) => p.id === marker.pointId);
  if (!record) {
    record = {
      id: marker.pointId,
      label: marker.label,
      createdAt: marker.createdAt,
      generation: marker.generation,
      undoFiles: marker.undoFiles,
    };
    points.push(record);
  }
  if (marker.retention !== undefined && points.length > marker.retention) points = points.slice(-marker.retention);
  await writePoints(paths.restorePoints, points);
  await hook?.('commit:points-written');
  await writeVmJson(paths.dir, {
    ...vm,
    replica: {
      ...vm.replica!,
      state: 'ready',
      writeGeneration: Math.max(vm.replica!.writeGeneration, marker.generation),
    },
  });
  await hook?.('commit:vm-written');
  for (const d of marker.disks) await rm(overlayPath(paths.dir, d.file), { force: true });
  await fsyncDir(paths.dir);
  await hook?.('commit:overlays-deleted');
  await rm(paths.commitMarker, { force: true });
  await fsyncDir(paths.dir);
  await collectUndoGarbage(paths, points);
  return record;
}

/**
 * Returns the replica to restore point `pointId`: drops the pending overlays and, for an older
 * point, applies the undo files newest point first down to it (crash-safe with `revert.json`;
 * re-applying the whole sequence after a crash gives the same bytes), then deletes the newer
 * points. A commit interrupted after its marker is rolled back first when it has a point to go
 * back to. The state becomes `ready`.
 *
 * @throws {@link @replikit/core!NotFoundError} when the replica has no such point.
 */
export async function revertReplica(
  paths: FileVmPaths,
  pointId: string,
  options: ReplicaOpOptions = {},
): Promise<void> {
  const vm0 = await readVmJson(paths.dir);
  assertReplica(paths, vm0);
  await withReplicaExclusive(paths, vm0, async () => {
    await checkAndRaiseFence(paths, options.fence, `the revert to restore point '${pointId}'`);
    const revert = await readMarker<RevertMarker>(paths.revertMarker, 'revert');
    if (revert) await finishRevert(paths, revert, options);
    const commit = await readMarker<CommitMarker>(paths.commitMarker, 'commit');
    const listed = commit ? (await readPoints(paths.restorePoints)).map((p) => p.id) : [];
    if (commit?.previousPointId && !listed.includes(commit.pointId) && listed.includes(commit.previousPointId)) {
      await rollBackCommit(paths, commit, options);
    } else if (commit) {
      await finishCommit(paths, commit, options);
    }
    // Dropping the pending overlays first is always safe (it only returns to the newest point) and
    // frees space before anything new is written: a revert must work on a full disk.
    const vm = await readVmJson(paths.dir);
    for (const disk of vm.disks) await rm(overlayPath(paths.dir, disk.file), { force: true });
    await fsyncDir(paths.dir);
    const points = await readPoints(paths.restorePoints);
    const index = points.findIndex((p) => p.id === pointId);
    if (index < 0) {
      throw new NotFoundError(
        `replica '${vm.name}' has no restore point '${pointId}' (it has ${points.map((p) => p.id).join(', ') || 'none'}); list them with listRestorePoints`,
        { details: { pointId } },
      );
    }
    if (index === points.length - 1) {
      if (vm.replica!.state !== 'ready')
        await writeVmJson(paths.dir, { ...vm, replica: { ...vm.replica!, state: 'ready' } });
      return;
    }
    const steps = points
      .slice(index + 1)
      .reverse()
      .map((p) => ({ pointId: p.id, undoFiles: p.undoFiles }));
    for (const step of steps) {
      for (const file of step.undoFiles) {
        const disk = vm.disks.find((d) => d.file === file);
        if (!disk)
          throw new FormatError(`restore point ${step.pointId} names an undo file for unknown disk file ${file}`);
        await assertRealFolders(paths.dir, undoDir(paths.dir, step.pointId), 'undo files');
        await checkUndoFile(undoPath(paths.dir, step.pointId, file), disk.size);
      }
    }
    throwIfAborted(options.signal);
    const marker: RevertMarker = { kind: 'revert', pointId, generation: vm.replica!.writeGeneration + 1, steps };
    await writeJsonAtomic(paths.revertMarker, marker);
    await options.faultHook?.('revert:marker-written');
    await finishRevert(paths, marker, options);
  });
}

/**
 * Undoes a commit that stopped after its marker but before recording its point (typically: the
 * disk filled up while applying the overlays). It writes nothing new, so it works on a full disk:
 * the commit's undo files (complete before the marker was written) are applied to the images, then
 * the marker is deleted, which returns the replica to "previous point + pending overlays". A crash
 * before the marker is deleted leaves a commit that rolls forward on the next call, which is just as
 * consistent.
 */
async function rollBackCommit(paths: FileVmPaths, marker: CommitMarker, options: ReplicaOpOptions): Promise<void> {
  const vm = await readVmJson(paths.dir);
  await applyUndoSteps(paths, vm, [{ pointId: marker.pointId, undoFiles: marker.undoFiles }], options);
  await rm(paths.commitMarker, { force: true });
  await fsyncDir(paths.dir);
  await collectUndoGarbage(paths, await readPoints(paths.restorePoints));
}

/** Applies undo files to the images, steps in the given order (newest point first), and fsyncs. */
async function applyUndoSteps(
  paths: FileVmPaths,
  vm: VmJson,
  steps: RevertMarker['steps'],
  options: ReplicaOpOptions,
): Promise<void> {
  const hook = options.faultHook;
  for (const disk of vm.disks) {
    const undos = steps.filter((s) => s.undoFiles.includes(disk.file));
    if (undos.length === 0) continue;
    await withFile(diskImagePath(paths.dir, disk.file), 'r+', `reverting disk '${disk.id}'`, async (base) => {
      for (const step of undos) {
        const file = undoPath(paths.dir, step.pointId, disk.file);
        await withFile(file, 'r', `reverting disk '${disk.id}'`, async (undo) => {
          const { size } = await undo.stat();
          await walkRecords(undo, {
            end: size,
            diskSize: disk.size,
            applyTo: base,
            what: `undo file ${file}`,
            afterRecord: hook && (() => hook('revert:record-applied')),
          });
        });
      }
      await base.sync();
    });
  }
}

/** Completes a revert from its marker. Idempotent, like {@link finishCommit}. */
async function finishRevert(paths: FileVmPaths, marker: RevertMarker, options: ReplicaOpOptions): Promise<void> {
  const hook = options.faultHook;
  const vm = await readVmJson(paths.dir);
  for (const disk of vm.disks) await rm(overlayPath(paths.dir, disk.file), { force: true });
  await fsyncDir(paths.dir);
  await hook?.('revert:overlays-deleted');
  await applyUndoSteps(paths, vm, marker.steps, options);
  await hook?.('revert:undo-applied');
  const points = await readPoints(paths.restorePoints);
  const index = points.findIndex((p) => p.id === marker.pointId);
  if (index < 0) {
    throw new FormatError(
      `${paths.revertMarker} reverts to restore point ${marker.pointId}, which ${paths.restorePoints} does not list; the replica cannot be trusted: delete it and seed it again`,
    );
  }
  const kept = points.slice(0, index + 1);
  await writePoints(paths.restorePoints, kept);
  await hook?.('revert:points-written');
  await writeVmJson(paths.dir, {
    ...vm,
    replica: {
      ...vm.replica!,
      state: 'ready',
      writeGeneration: Math.max(vm.replica!.writeGeneration, marker.generation),
    },
  });
  await rm(paths.revertMarker, { force: true });
  await fsyncDir(paths.dir);
  await collectUndoGarbage(paths, kept);
}

/**
 * Validates a disk's overlay, cutting off a torn tail (what a crash mid-write leaves), and returns
 * where its valid records end and, when asked, the ranges they cover.
 */
export async function scanOverlay(
  paths: FileVmPaths,
  file: string,
  diskSize: number,
  collectRanges: boolean,
): Promise<{ validEnd: number; records: number; ranges: Extent[] }> {
  const path = overlayPath(paths.dir, file);
  let fh: FileHandle;
  try {
    fh = await openDataFile(path, READ_WRITE, { what: 'overlay' });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { validEnd: 0, records: 0, ranges: [] };
    throw toStorageError(error, `opening the overlay ${path}`);
  }
  try {
    const { size } = await fh.stat();
    const result = await walkRecords(fh, { end: size, diskSize, collectRanges, what: `overlay ${path}` });
    if (result.validEnd < size) {
      await fh.truncate(result.validEnd);
      await fh.sync();
    }
    return result;
  } catch (error) {
    throw toStorageError(error, `reading the overlay ${path}`);
  } finally {
    await fh.close();
  }
}

/**
 * Writes the undo file `path`: the current content of `ranges` of the image `basePath`, in 1 MiB
 * records, all-zero chunks as (merged) zero records. Fsynced before it returns.
 */
async function writeUndo(
  basePath: string,
  path: string,
  ranges: Extent[],
  options: { diskSize: number; signal?: AbortSignal | undefined },
): Promise<void> {
  await withFile(basePath, 'r', `reading ${basePath} for its undo file`, (base) =>
    withFile(path, 'w', `writing the undo file ${path}`, async (out) => {
      const scratch = Buffer.allocUnsafeSlow(IO_CHUNK);
      let position = 0;
      let zero: Extent | undefined;
      const flushZero = async (): Promise<void> => {
        if (!zero) return;
        const header = encodeRecordHeader(zero.offset, zero.length);
        await writevFully(out, [header], position);
        position += header.length;
        zero = undefined;
      };
      for (const range of ranges) {
        const end = range.offset + range.length;
        for (let at = range.offset; at < end; at += IO_CHUNK) {
          throwIfAborted(options.signal);
          const n = Math.min(IO_CHUNK, end - at);
          const chunk = scratch.subarray(0, n);
          if ((await readFully(base, chunk, 0, n, at)) < n) {
            throw new FormatError(`image ${basePath} is shorter than ${options.diskSize} bytes; it was truncated`);
          }
          if (isAllZero(chunk)) {
            if (zero && zero.offset + zero.length === at) zero.length += n;
            else {
              await flushZero();
              zero = { offset: at, length: n };
            }
            continue;
          }
          await flushZero();
          const header = encodeRecordHeader(at, n, chunk);
          await writevFully(out, [header, chunk], position);
          position += header.length + n;
        }
      }
      await flushZero();
      await out.sync();
    }),
  );
}

/** Checks that an undo file exists and is valid to its end. */
async function checkUndoFile(path: string, diskSize: number): Promise<void> {
  await withFile(path, 'r', `checking the undo file ${path}`, async (fh) => {
    const { size } = await fh.stat();
    const { validEnd } = await walkRecords(fh, { end: size, diskSize, what: `undo file ${path}` });
    if (validEnd !== size) {
      throw new FormatError(
        `undo file ${path} is damaged at byte ${validEnd} of ${size}; the replica cannot go back past this point (revert to a newer point, or delete the replica and seed it again)`,
        { details: { path, validEnd, size } },
      );
    }
  });
}

/**
 * Deletes the undo folders nothing needs: only points after the oldest need theirs (the oldest
 * point's undo would lead to a point that no longer exists). Also clears a stray folder of a
 * commit that crashed before its marker.
 */
async function collectUndoGarbage(paths: FileVmPaths, points: PointRecord[]): Promise<void> {
  const keep = new Set(points.slice(1).map((p) => p.id));
  let entries: string[];
  try {
    entries = await readdir(paths.undo);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw toStorageError(error, `listing ${paths.undo}`);
  }
  const garbage = entries.filter((e) => !keep.has(e));
  for (const entry of garbage) await rm(join(paths.undo, entry), { recursive: true, force: true });
  if (garbage.length > 0) await fsyncDir(paths.undo);
}

/** Throws unless `vm` is a replica. */
export function assertReplica(paths: FileVmPaths, vm: VmJson): void {
  if (!vm.replica) {
    throw new InputError(
      `${paths.dir} is a VM, not a replica (its vm.json has no "replica" section); replikit only writes replicas`,
      {
        details: { dir: paths.dir },
      },
    );
  }
}

/** The point id of a commit whose marker is still there (it could not be finished yet), if any. */
export async function pendingCommitPointId(paths: FileVmPaths): Promise<string | undefined> {
  return (await readMarker<CommitMarker>(paths.commitMarker, 'commit'))?.pointId;
}

/** Refuses to go on while a marker is left that could not be finished (e.g. the disk is still full). */
export async function assertNoMarker(paths: FileVmPaths, vm: VmJson): Promise<void> {
  if (await hasMarker(paths)) {
    throw new ReplicaInProgressError(
      `replica '${vm.name}' has an unfinished commit or revert (${paths.dir}); retry, or revert it to its last restore point`,
    );
  }
}

async function readMarker<T extends CommitMarker | RevertMarker>(
  path: string,
  kind: T['kind'],
): Promise<T | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw toStorageError(error, `reading ${path}`);
  }
  let marker: Record<string, unknown> | undefined;
  try {
    const parsed: unknown = JSON.parse(text);
    marker = typeof parsed === 'object' && parsed !== null ? (parsed as Record<string, unknown>) : undefined;
  } catch {
    marker = undefined;
  }
  const isCount = (v: unknown): boolean => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
  const isNameList = (v: unknown): boolean => Array.isArray(v) && v.every(isSafeName);
  const ok =
    marker !== undefined &&
    marker.kind === kind &&
    isSafeName(marker.pointId) &&
    isCount(marker.generation) &&
    (kind === 'commit'
      ? Array.isArray(marker.disks) &&
        marker.disks.every(
          (d: { file?: unknown; overlayLength?: unknown } | null) => isSafeName(d?.file) && isCount(d?.overlayLength),
        ) &&
        isNameList(marker.undoFiles) &&
        typeof marker.label === 'string' &&
        typeof marker.createdAt === 'string' &&
        (marker.previousPointId === undefined || isSafeName(marker.previousPointId))
      : Array.isArray(marker.steps) &&
        marker.steps.every(
          (st: { pointId?: unknown; undoFiles?: unknown } | null) =>
            isSafeName(st?.pointId) && isNameList(st?.undoFiles),
        ));
  if (!ok) {
    throw new FormatError(`${path} is malformed; the replica cannot be trusted: delete it and seed it again`, {
      details: { path },
    });
  }
  return marker as unknown as T;
}

async function withFile<T>(
  path: string,
  flags: 'r' | 'r+' | 'w',
  what: string,
  fn: (fh: FileHandle) => Promise<T>,
): Promise<T> {
  let fh: FileHandle;
  try {
    fh = await openDataFile(path, flagsOf(flags), { what });
  } catch (error) {
    throw toStorageError(error, what);
  }
  try {
    return await fn(fh);
  } catch (error) {
    throw toStorageError(error, `${what} (${path})`);
  } finally {
    await fh.close();
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw toStorageError(error, `checking ${path}`);
  }
}
