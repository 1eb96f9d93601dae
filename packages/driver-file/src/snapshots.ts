import { type FileHandle, mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { type DiskRef, FormatError, NotFoundError, type Snapshot, toStorageError } from '@replikit/core';
import { ALLOCATION_GRANULE, AllocationMap } from './allocation-map.js';
import { fsyncDir, writeFileAtomic, writeJsonAtomic } from './atomic-write.js';
import { writeFully } from './block-io.js';
import {
  ChangeBitmap,
  cbtPathOf,
  readChangeBitmap,
  sameStamp,
  stampOf,
  stampWithOwnTime,
  writeChangeBitmap,
} from './change-bitmap.js';
import { assertRealFolders, flagsOf, openDataFile, readDataFile } from './data-file.js';
import { newSortableId } from './ids.js';
import { acquireLockFile } from './locks.js';
import { assertSafeName, isSafeName } from './names.js';
import { type FileVmPaths, snapshotDir } from './paths.js';
import type { FaultHook } from './replica-commit.js';
import { finishSnapshotMerge } from './snapshot-merge.js';
import { copyDirtyGranules, copyDiskImage } from './sparse-copy.js';
import { DISCARD_PREFIX, discard, removeInBackground } from './trash.js';
import { checkDiskImages, checkImageSize, type VmJson } from './vm-metadata.js';

/** One frozen disk in `snapshot.json`. */
export interface SnapshotDiskJson {
  /** Disk id. */
  id: string;
  /** The frozen image in the snapshot folder (same name as the VM's image). */
  file: string;
  /** Virtual size in bytes. */
  size: number;
  /** Human-readable name. */
  label?: string;
  /**
   * `bitmap`: `<file>.alloc` holds its allocation map (for a `diff`, the granules the file holds);
   * `none`: unknown (reflinked copy, every block counts as allocated).
   */
  allocation: 'bitmap' | 'none';
  /**
   * `full` (the default, and the only kind of version 1): `<file>` holds the whole disk.
   * `diff` (version 2): `<file>` holds only the granules of its map, at their natural offsets
   * (a sparse file); every other granule reads as in snapshot `base`.
   */
  kind?: 'full' | 'diff';
  /** The snapshot a `diff` builds on (an older snapshot of the same VM); absent on a `full` disk. */
  base?: string;
}

/** `snapshot.json`, in each snapshot folder. */
export interface SnapshotJson {
  /** Format version: 1 (only full disks), or 2 when a disk is a `diff`. */
  version: 1 | 2;
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
  disks: SnapshotDiskJson[];
}

/** Options of {@link takeSnapshot}. */
export interface TakeSnapshotOptions {
  /** Cancels the copy; the partial snapshot is removed. */
  signal?: AbortSignal | undefined;
  /** Try reflink clones first. @default true */
  reflink?: boolean | undefined;
  /** Crash injection for tests. */
  faultHook?: FaultHook | undefined;
}

/** Name of the metadata file of a snapshot folder. */
export const SNAPSHOT_JSON = 'snapshot.json';

/**
 * Freezes every disk of the VM at one instant: takes the VM lock (guest writes through
 * `writeGuestDisk` wait for no one: they fail with `E_CONFLICT` while it is held), copies each image
 * into `snapshots/.tmp-<id>/`, writes `snapshot.json`, then renames the folder to
 * `snapshots/<id>/`. A crash leaves either no snapshot or a complete one (temporary folders are
 * removed by the next snapshot).
 *
 * A disk is copied whole (reflink, or a sparse copy with an allocation map) unless the VM has change
 * tracking, its `.cbt` bitmap is intact, the image's stamp matches the one recorded with it, and the
 * newest snapshot that still has its data was taken at or after the bitmap's epoch: then only the
 * dirty granules are copied (a `diff` on that snapshot). Once the snapshot is committed, each bitmap
 * is reset to empty with the new snapshot as its epoch; a crash before that only makes the next
 * snapshot copy more than needed.
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
    await finishSnapshotMerge(paths, vmId, options.faultHook);
    await checkDiskImages(paths.dir, vm);
    await mkdir(paths.snapshots, { recursive: true });
    // copies are written under snapshots/: a link there would put them outside the VM folder
    await assertRealFolders(paths.dir, paths.snapshots, `the snapshots of VM '${vmId}'`);
    const existing = await readdir(paths.snapshots);
    for (const entry of existing) {
      const path = join(paths.snapshots, entry);
      if (entry.startsWith('.tmp-')) await rm(path, { recursive: true, force: true });
      // Left by a crash (this process's own are being removed already).
      else if (entry.startsWith(DISCARD_PREFIX)) removeInBackground(path);
    }
    const id = newSortableId('snap', existing.filter(isSafeName));
    tmp = join(paths.snapshots, `.tmp-${id}`);
    await mkdir(tmp);
    const tracking = vm.changeTracking === true && !vm.replica;
    const newest = tracking ? await newestWithData(paths, vmId, existing) : undefined;
    const meta: SnapshotJson = { version: 1, id, vmId, label, createdAt: new Date().toISOString(), disks: [] };
    const resets: Array<{ path: string; cbt: ChangeBitmap }> = [];
    for (const disk of vm.disks) {
      const image = join(paths.dir, disk.file);
      const entry: SnapshotDiskJson = {
        id: disk.id,
        file: disk.file,
        size: disk.size,
        ...(disk.label === undefined ? {} : { label: disk.label }),
        allocation: 'bitmap',
      };
      let dirty: AllocationMap | undefined;
      if (tracking) {
        const cbtPath = cbtPathOf(image);
        const found = await readChangeBitmap(cbtPath, disk.size);
        const valid =
          found.state === 'valid' && sameStamp(found.cbt.stamp, stampOf(await stat(image, { bigint: true })));
        const baseDisk = newest?.disks.find((d) => d.id === disk.id && d.size === disk.size && d.file === disk.file);
        if (valid && newest && baseDisk && (found.cbt.epoch === '' || newest.id >= found.cbt.epoch)) {
          dirty = found.cbt.map;
          entry.kind = 'diff';
          entry.base = newest.id;
          meta.version = 2;
        }
        // The stamp the new bitmap starts from, taken before the copy with a time of our own: a
        // write behind our back, even during the copy or within the same clock tick, changes it.
        const stamp = await withHandle(image, 'r', stampWithOwnTime);
        if (valid) {
          // The current bitmap follows (durably), so that a crash before the reset keeps it valid.
          found.cbt.stamp = stamp;
          await withHandle(cbtPath, 'r+', async (fh) => {
            await writeFully(fh, found.cbt.encodeHeader(), 0);
            await fh.datasync();
          });
        }
        resets.push({ path: cbtPath, cbt: new ChangeBitmap(disk.size, id, stamp) });
      }
      if (dirty) {
        await copyDirtyGranules(image, join(tmp, disk.file), disk.size, dirty, options);
        await writeFileAtomic(join(tmp, `${disk.file}.alloc`), dirty.encode());
      } else {
        const copy = await copyDiskImage(image, join(tmp, disk.file), disk.size, options);
        if (copy.map) await writeFileAtomic(join(tmp, `${disk.file}.alloc`), copy.map.encode());
        else entry.allocation = 'none';
      }
      meta.disks.push(entry);
    }
    await writeJsonAtomic(join(tmp, SNAPSHOT_JSON), meta);
    await options.faultHook?.('snapshot:copied');
    const final = snapshotDir(paths.dir, id);
    await rename(tmp, final);
    tmp = undefined;
    await fsyncDir(paths.snapshots);
    await options.faultHook?.('snapshot:committed');
    for (const reset of resets) await writeChangeBitmap(reset.path, reset.cbt);
    if (resets.length > 0) await options.faultHook?.('snapshot:tracking-reset');
    return toSnapshot(meta);
  } catch (error) {
    if (tmp) await rm(tmp, { recursive: true, force: true });
    throw toStorageError(error, `taking a snapshot of VM '${vmId}'`);
  } finally {
    await lock.release();
  }
}

/** Runs `fn` on `path` opened with `flags`, closing it after. */
async function withHandle<T>(path: string, flags: 'r' | 'r+', fn: (fh: FileHandle) => Promise<T>): Promise<T> {
  const fh = await openDataFile(path, flagsOf(flags), { what: 'a disk image' });
  try {
    return await fn(fh);
  } finally {
    await fh.close();
  }
}

/** The newest snapshot of the VM whose data was not deleted, among the folder names `entries`. */
async function newestWithData(paths: FileVmPaths, vmId: string, entries: string[]): Promise<SnapshotJson | undefined> {
  const ids = entries.filter(isSafeName).sort();
  for (let i = ids.length - 1; i >= 0; i--) {
    const meta = await readSnapshotJson(paths, vmId, ids[i]!);
    if (!meta.dataDeleted) return meta;
  }
  return undefined;
}

/** Reads and validates `snapshots/<snapshotId>/snapshot.json`. */
export async function readSnapshotJson(paths: FileVmPaths, vmId: string, snapshotId: string): Promise<SnapshotJson> {
  return (await readSnapshotJsonText(paths, vmId, snapshotId)).meta;
}

/** {@link readSnapshotJson}, also returning the file's text (to notice a concurrent change). */
export async function readSnapshotJsonText(
  paths: FileVmPaths,
  vmId: string,
  snapshotId: string,
): Promise<{ meta: SnapshotJson; text: string }> {
  const folder = snapshotDir(paths.dir, snapshotId);
  const file = join(folder, SNAPSHOT_JSON);
  let text: string;
  try {
    // every layer of a snapshot is read from this folder: it must lie inside the VM folder
    await assertRealFolders(paths.dir, folder, `snapshot '${snapshotId}' of VM '${vmId}'`);
    text = (await readDataFile(file, `snapshot '${snapshotId}' of VM '${vmId}'`)).toString('utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new NotFoundError(`VM '${vmId}' has no snapshot '${snapshotId}' (no ${file})`, { details: { path: file } });
    }
    throw toStorageError(error, `reading ${file}`);
  }
  return { meta: parseSnapshotJson(text, file, snapshotId), text };
}

/**
 * Parses and validates the text of a `snapshot.json` (version 1 or 2).
 *
 * @param file - The file's path, named in error messages.
 * @param snapshotId - The id the snapshot must have (its folder name).
 * @throws {@link @replikit/core!FormatError} for a malformed field, {@link @replikit/core!InputError} for an unsafe name.
 */
export function parseSnapshotJson(text: string, file: string, snapshotId: string): SnapshotJson {
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
  if (typeof raw !== 'object' || raw === null) return bad('not an object');
  if ((raw.version !== 1 && raw.version !== 2) || raw.id !== snapshotId) bad('wrong version or id');
  if (typeof raw.label !== 'string' || typeof raw.createdAt !== 'string' || typeof raw.vmId !== 'string')
    bad('label, createdAt or vmId');
  if (raw.dataDeleted !== undefined && typeof raw.dataDeleted !== 'boolean') bad('dataDeleted');
  if (!Array.isArray(raw.disks)) return bad('no disks array');
  for (const [i, d] of raw.disks.entries()) {
    if (typeof d !== 'object' || d === null) bad(`disks[${i}] is not an object`);
    assertSafeName(d.id, `${file}: disks[${i}].id`);
    assertSafeName(d.file, `${file}: disks[${i}].file`);
    if (!Number.isSafeInteger(d.size) || d.size < 0) bad(`disks[${i}].size`);
    if (d.label !== undefined && typeof d.label !== 'string') bad(`disks[${i}].label`);
    if (d.allocation !== 'bitmap' && d.allocation !== 'none') bad(`disks[${i}].allocation`);
    if (d.kind !== undefined && d.kind !== 'full' && d.kind !== 'diff') bad(`disks[${i}].kind`);
    if (d.kind === 'diff') {
      if (raw.version !== 2) bad(`disks[${i}].kind diff in a version 1 file`);
      assertSafeName(d.base, `${file}: disks[${i}].base`);
      if (!(d.base! < snapshotId)) bad(`disks[${i}].base must be an older snapshot`);
      if (d.allocation !== 'bitmap') bad(`disks[${i}].allocation of a diff must be bitmap`);
    } else if (d.base !== undefined) {
      bad(`disks[${i}].base on a full disk`);
    }
  }
  return raw as SnapshotJson;
}

/** Lists the VM's snapshots, oldest first (ids sort by creation). */
export async function listSnapshotsOf(paths: FileVmPaths, vmId: string): Promise<Snapshot[]> {
  return (await listSnapshotJsons(paths, vmId)).map(toSnapshot);
}

/** The `snapshot.json` of every snapshot of the VM, oldest first. */
export async function listSnapshotJsons(paths: FileVmPaths, vmId: string): Promise<SnapshotJson[]> {
  let entries: string[];
  try {
    entries = await readdir(paths.snapshots);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw toStorageError(error, `listing ${paths.snapshots}`);
  }
  const ids = entries.filter(isSafeName).sort();
  const metas: SnapshotJson[] = [];
  for (const id of ids) metas.push(await readSnapshotJson(paths, vmId, id));
  return metas;
}

/** One layer of a snapshot disk's chain: the disk of one snapshot. */
export interface ChainLayer {
  /** The snapshot holding this layer. */
  snapshotId: string;
  /** `full` (the bottom of a chain) or `diff`. */
  kind: 'full' | 'diff';
  /** The layer's image. */
  path: string;
  /** Its allocation map: the granules a diff holds; for a full image, undefined when unknown (reflink). */
  map?: AllocationMap;
  /** The text of its snapshot.json when it was read. */
  text: string;
}

/**
 * Locates the frozen image of one snapshot disk and the chain of snapshots it builds on, and checks
 * them: each layer's `snapshot.json`, image size and allocation map.
 *
 * @returns The layers, the requested snapshot first and a full image last, and the declared size.
 * @throws {@link @replikit/core!NotFoundError} for an unknown snapshot or disk, or deleted data.
 * @throws {@link @replikit/core!FormatError} for a short image, a damaged allocation map or a broken chain.
 */
export async function locateSnapshotChain(
  paths: FileVmPaths,
  ref: DiskRef,
): Promise<{ layers: ChainLayer[]; size: number }> {
  const snapshotId = assertSafeName(ref.snapshotId, 'snapshot id');
  const layers: ChainLayer[] = [];
  let size = -1;
  let current: string | undefined = snapshotId;
  while (current !== undefined) {
    const { meta, text } = await readSnapshotJsonText(paths, ref.vmId, current);
    const top = layers.length === 0;
    if (meta.dataDeleted) {
      if (top) {
        throw new NotFoundError(
          `the data of snapshot '${snapshotId}' of VM '${ref.vmId}' was deleted (only its metadata was kept)`,
        );
      }
      throw new FormatError(
        `snapshot '${snapshotId}' of VM '${ref.vmId}' builds on '${current}', whose data was deleted; delete the snapshot and take a new one`,
      );
    }
    const disk = meta.disks.find((d) => d.id === ref.id);
    if (!disk) {
      if (top) throw new NotFoundError(`snapshot '${snapshotId}' of VM '${ref.vmId}' has no disk '${ref.id}'`);
      throw new FormatError(`snapshot '${current}' of VM '${ref.vmId}' has no disk '${ref.id}' for its successors`);
    }
    if (top) size = disk.size;
    else if (disk.size !== size) {
      throw new FormatError(
        `disk '${ref.id}' of snapshot '${current}' is ${disk.size} bytes, its successor ${size}; delete the snapshots and take new ones`,
      );
    }
    const path = join(snapshotDir(paths.dir, current), disk.file);
    await checkImageSize(path, disk.id, disk.size);
    const kind = disk.kind ?? 'full';
    let map: AllocationMap | undefined;
    if (disk.allocation === 'bitmap') {
      const mapFile = `${path}.alloc`;
      let data: Uint8Array;
      try {
        data = await readDataFile(mapFile, `the allocation map of disk '${disk.id}'`);
      } catch (error) {
        throw toStorageError(error, `reading the allocation map of disk '${disk.id}'`);
      }
      map = AllocationMap.decode(data, disk.size, mapFile);
      if (map.granule !== ALLOCATION_GRANULE && (kind === 'diff' || layers.length > 0)) {
        throw new FormatError(
          `${mapFile}: a map in a snapshot chain must have ${ALLOCATION_GRANULE}-byte granules, not ${map.granule}; delete the snapshot and take a new one`,
        );
      }
    }
    layers.push({ snapshotId: current, kind, path, ...(map ? { map } : {}), text });
    if (kind === 'diff') {
      if (layers.length > 10_000) throw new FormatError(`the snapshot chain of '${snapshotId}' is too long`);
      if (!(disk.base! < current)) throw new FormatError(`snapshot '${current}' names a newer base`);
      current = disk.base;
    } else current = undefined;
  }
  return { layers, size };
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

/** True when `path` exists. */
export async function pathExists(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined)) !== undefined;
}

/** Opens `path` and fsyncs it (a file or a folder). Missing files are ignored. */
export async function fsyncPath(path: string): Promise<void> {
  let fh: Awaited<ReturnType<typeof open>> | undefined;
  try {
    fh = await open(path, 'r');
    await fh.sync();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw toStorageError(error, `syncing ${path}`);
  } finally {
    await fh?.close();
  }
}

/**
 * Removes a snapshot folder durably: renamed to `.deleting-<id>-<hex>` (atomic, fsynced), then
 * removed in the background (see {@link discard}).
 */
export async function removeSnapshotFolder(paths: FileVmPaths, snapshotId: string): Promise<void> {
  await discard(paths.snapshots, snapshotDir(paths.dir, snapshotId), snapshotId);
}

/** Block size a snapshot reader reports: the allocation granule. */
export const SNAPSHOT_BLOCK_SIZE = ALLOCATION_GRANULE;
