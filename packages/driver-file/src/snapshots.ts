import { mkdir, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { type DiskRef, FormatError, NotFoundError, type Snapshot, toStorageError } from '@replikit/core';
import { ALLOCATION_GRANULE, AllocationMap } from './allocation-map.js';
import { fsyncDir, writeFileAtomic, writeJsonAtomic } from './atomic-write.js';
import { newSortableId } from './ids.js';
import { acquireLockFile } from './locks.js';
import { assertSafeName, isSafeName } from './names.js';
import { type FileVmPaths, snapshotDir } from './paths.js';
import { copyDiskImage } from './sparse-copy.js';
import { checkDiskImages, checkImageSize, type VmJson } from './vm-metadata.js';

/** `snapshot.json`, in each snapshot folder. */
export interface SnapshotJson {
  /** Format version (1). */
  version: 1;
  /** Snapshot id, also its folder name. */
  id: string;
  /** The VM it was taken of. */
  vmId: string;
  /** The label given at creation. */
  label: string;
  /** ISO 8601 creation time. */
  createdAt: string;
  /** Set by `deleteSnapshot(…, { keepMetadata: true })`: the frozen images are gone. */
  dataDeleted?: boolean;
  /** The frozen disks, in the VM's order. */
  disks: Array<{
    /** Disk id. */
    id: string;
    /** The frozen image in the snapshot folder (same name as the VM's image). */
    file: string;
    /** Virtual size in bytes. */
    size: number;
    /** Human-readable name. */
    label?: string;
    /** `bitmap`: `<file>.alloc` holds its allocation map; `none`: unknown (reflinked copy). */
    allocation: 'bitmap' | 'none';
  }>;
}

/** Options of {@link takeSnapshot}. */
export interface TakeSnapshotOptions {
  /** Cancels the copy; the partial snapshot is removed. */
  signal?: AbortSignal | undefined;
  /** Try reflink clones first. @default true */
  reflink?: boolean | undefined;
}

const SNAPSHOT_JSON = 'snapshot.json';

/**
 * Freezes every disk of the VM at one instant: takes the VM lock (guest writes through
 * `writeGuestDisk` wait for no one: they fail with `E_CONFLICT` while it is held), copies each image
 * (reflink, or a sparse copy with an allocation map) into `snapshots/.tmp-<id>/`, writes
 * `snapshot.json`, then renames the folder to `snapshots/<id>/`. A crash leaves either no snapshot
 * or a complete one (temporary folders are removed by the next snapshot).
 */
export async function takeSnapshot(
  paths: FileVmPaths,
  vmId: string,
  vm: VmJson,
  label: string,
  options: TakeSnapshotOptions = {},
): Promise<Snapshot> {
  const lock = await acquireLockFile(
    paths.vmLock,
    `VM '${vmId}' (a snapshot is being taken or a guest write is running)`,
  );
  let tmp: string | undefined;
  try {
    await checkDiskImages(paths.dir, vm);
    await mkdir(paths.snapshots, { recursive: true });
    const existing = await readdir(paths.snapshots);
    for (const entry of existing) {
      if (entry.startsWith('.tmp-') || entry.startsWith('.deleting-'))
        await rm(join(paths.snapshots, entry), { recursive: true, force: true });
    }
    const id = newSortableId('snap', existing.filter(isSafeName));
    tmp = join(paths.snapshots, `.tmp-${id}`);
    await mkdir(tmp);
    const meta: SnapshotJson = { version: 1, id, vmId, label, createdAt: new Date().toISOString(), disks: [] };
    for (const disk of vm.disks) {
      const copy = await copyDiskImage(join(paths.dir, disk.file), join(tmp, disk.file), disk.size, options);
      if (copy.map) await writeFileAtomic(join(tmp, `${disk.file}.alloc`), copy.map.encode());
      meta.disks.push({
        id: disk.id,
        file: disk.file,
        size: disk.size,
        ...(disk.label === undefined ? {} : { label: disk.label }),
        allocation: copy.map ? 'bitmap' : 'none',
      });
    }
    await writeJsonAtomic(join(tmp, SNAPSHOT_JSON), meta);
    const final = snapshotDir(paths.dir, id);
    await rename(tmp, final);
    tmp = undefined;
    await fsyncDir(paths.snapshots);
    return toSnapshot(meta);
  } catch (error) {
    if (tmp) await rm(tmp, { recursive: true, force: true });
    throw toStorageError(error, `taking a snapshot of VM '${vmId}'`);
  } finally {
    await lock.release();
  }
}

/** Reads and validates `snapshots/<snapshotId>/snapshot.json`. */
export async function readSnapshotJson(paths: FileVmPaths, vmId: string, snapshotId: string): Promise<SnapshotJson> {
  const file = join(snapshotDir(paths.dir, snapshotId), SNAPSHOT_JSON);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new NotFoundError(`VM '${vmId}' has no snapshot '${snapshotId}' (no ${file})`, { details: { path: file } });
    }
    throw toStorageError(error, `reading ${file}`);
  }
  const bad = (why: string): never => {
    throw new FormatError(`${file} is malformed (${why}); delete the snapshot folder and take a new snapshot`, {
      details: { file },
    });
  };
  let raw: Partial<SnapshotJson>;
  try {
    raw = JSON.parse(text) as Partial<SnapshotJson>;
  } catch {
    return bad('not JSON');
  }
  if (raw?.version !== 1 || raw.id !== snapshotId) bad('wrong version or id');
  if (typeof raw.label !== 'string' || typeof raw.createdAt !== 'string' || typeof raw.vmId !== 'string')
    bad('label, createdAt or vmId');
  if (!Array.isArray(raw.disks)) return bad('no disks array');
  for (const [i, d] of raw.disks.entries()) {
    assertSafeName(d?.id, `${file}: disks[${i}].id`);
    assertSafeName(d?.file, `${file}: disks[${i}].file`);
    if (!Number.isSafeInteger(d.size) || d.size < 0) bad(`disks[${i}].size`);
    if (d.allocation !== 'bitmap' && d.allocation !== 'none') bad(`disks[${i}].allocation`);
  }
  return raw as SnapshotJson;
}

/** Lists the VM's snapshots, oldest first (ids sort by creation). */
export async function listSnapshotsOf(paths: FileVmPaths, vmId: string): Promise<Snapshot[]> {
  let entries: string[];
  try {
    entries = await readdir(paths.snapshots);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw toStorageError(error, `listing ${paths.snapshots}`);
  }
  const ids = entries.filter(isSafeName).sort();
  const snapshots: Snapshot[] = [];
  for (const id of ids) snapshots.push(toSnapshot(await readSnapshotJson(paths, vmId, id)));
  return snapshots;
}

/**
 * Deletes a snapshot. With `keepMetadata`, only the frozen images and allocation maps are deleted:
 * `snapshot.json` stays (marked `dataDeleted`), the snapshot is still listed (with
 * `meta.dataDeleted: true`), and opening a reader on it fails with `E_NOT_FOUND`. Without it, the
 * folder is renamed away (atomic) and then removed. Deleting a missing snapshot does nothing.
 */
export async function deleteSnapshotOf(
  paths: FileVmPaths,
  vmId: string,
  snapshotId: string,
  keepMetadata: boolean,
): Promise<void> {
  const folder = snapshotDir(paths.dir, snapshotId);
  if (!(await stat(folder).catch(() => undefined))) return;
  const lock = await acquireLockFile(
    paths.vmLock,
    `VM '${vmId}' (a snapshot is being taken or a guest write is running)`,
  );
  try {
    if (keepMetadata) {
      const meta = await readSnapshotJson(paths, vmId, snapshotId);
      if (!meta.dataDeleted) await writeJsonAtomic(join(folder, SNAPSHOT_JSON), { ...meta, dataDeleted: true });
      for (const disk of meta.disks) {
        await rm(join(folder, disk.file), { force: true });
        await rm(join(folder, `${disk.file}.alloc`), { force: true });
      }
      await fsyncDir(folder);
      return;
    }
    const doomed = join(paths.snapshots, `.deleting-${snapshotId}`);
    await rename(folder, doomed);
    await fsyncDir(paths.snapshots);
    await rm(doomed, { recursive: true, force: true });
  } catch (error) {
    throw toStorageError(error, `deleting snapshot '${snapshotId}' of VM '${vmId}'`);
  } finally {
    await lock.release();
  }
}

/**
 * Locates the frozen image of one snapshot disk and checks it.
 *
 * @returns The image path, its declared size and its allocation map (when it has one).
 * @throws {@link @replikit/core!NotFoundError} for an unknown snapshot or disk, or deleted data.
 * @throws {@link @replikit/core!FormatError} for a short image or a damaged allocation map.
 */
export async function locateSnapshotDisk(
  paths: FileVmPaths,
  ref: DiskRef,
): Promise<{ path: string; size: number; map?: AllocationMap }> {
  const snapshotId = assertSafeName(ref.snapshotId, 'snapshot id');
  const meta = await readSnapshotJson(paths, ref.vmId, snapshotId);
  if (meta.dataDeleted) {
    throw new NotFoundError(
      `the data of snapshot '${snapshotId}' of VM '${ref.vmId}' was deleted (only its metadata was kept)`,
    );
  }
  const disk = meta.disks.find((d) => d.id === ref.id);
  if (!disk) throw new NotFoundError(`snapshot '${snapshotId}' of VM '${ref.vmId}' has no disk '${ref.id}'`);
  const folder = snapshotDir(paths.dir, snapshotId);
  const path = join(folder, disk.file);
  await checkImageSize(path, disk.id, disk.size);
  if (disk.allocation === 'none') return { path, size: disk.size };
  const mapFile = `${path}.alloc`;
  let data: Uint8Array;
  try {
    data = await readFile(mapFile);
  } catch (error) {
    throw toStorageError(error, `reading the allocation map of disk '${disk.id}'`);
  }
  return { path, size: disk.size, map: AllocationMap.decode(data, disk.size, mapFile) };
}

/** The public {@link Snapshot} of a `snapshot.json`. */
export function toSnapshot(meta: SnapshotJson): Snapshot {
  return {
    id: meta.id,
    vmId: meta.vmId,
    label: meta.label,
    createdAt: meta.createdAt,
    disks: meta.disks.map(
      (d): DiskRef => ({
        id: d.id,
        vmId: meta.vmId,
        snapshotId: meta.id,
        size: d.size,
        ...(d.label === undefined ? {} : { label: d.label }),
      }),
    ),
    ...(meta.dataDeleted ? { meta: { dataDeleted: true } } : {}),
  };
}

/** Block size a snapshot reader reports: the allocation granule. */
export const SNAPSHOT_BLOCK_SIZE = ALLOCATION_GRANULE;
