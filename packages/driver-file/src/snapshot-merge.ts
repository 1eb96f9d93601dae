import { type FileHandle, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { ConflictError, FormatError, StateError, toStorageError } from '@replikit/core';
import { ALLOCATION_GRANULE, AllocationMap } from './allocation-map.js';
import { fsyncDir, writeFileAtomic, writeJsonAtomic } from './atomic-write.js';
import { forEachConcurrently, IO_CHUNK, isAllZero, readFully, splitExtents, writeFully } from './block-io.js';
import { cbtPathOf, readChangeBitmap, writeChangeBitmap } from './change-bitmap.js';
import { openDataFile, READ, READ_WRITE } from './data-file.js';
import { acquireLockFile } from './locks.js';
import { assertSafeName } from './names.js';
import { type FileVmPaths, snapshotDir } from './paths.js';
import type { FaultHook } from './replica-commit.js';
import {
  listSnapshotJsons,
  pathExists,
  readSnapshotJson,
  removeSnapshotFolder,
  SNAPSHOT_JSON,
  type SnapshotDiskJson,
  type SnapshotJson,
} from './snapshots.js';
import { COPY_LANES } from './sparse-copy.js';
import { discard } from './trash.js';
import { readVmJson } from './vm-metadata.js';

/**
 * `snapshots/.merge.json`: a deletion that merges the doomed snapshot into the one snapshot that
 * builds on it. Written before anything changes; each phase is idempotent, so a crash at any instant
 * is finished by the next call that touches the VM's snapshots.
 */
interface MergeJournal {
  /** Always 1. */
  version: 1;
  /** The snapshot being deleted. */
  doomed: string;
  /** The snapshot that builds on it and receives what it needs from it. */
  child: string;
  /** Keep the doomed snapshot's `snapshot.json`, marked `dataDeleted`. */
  keepMetadata: boolean;
  /**
   * `copy`: data is being copied (nothing moved yet); `switch`: files are being moved, the child's
   * json rewritten, then the doomed data removed (`drop` is accepted and treated like `switch`).
   */
  phase: 'copy' | 'switch' | 'drop';
  /** Per disk of the child that builds on the doomed snapshot: how it is merged. */
  steps: Array<{ file: string; mode: 'into-child-diff' | 'into-doomed-full' }>;
  /** The child's disks once merged. */
  childDisks: SnapshotDiskJson[];
}

const JOURNAL = '.merge.json';

function journalPath(paths: FileVmPaths): string {
  return join(paths.snapshots, JOURNAL);
}

/** Name of a staged allocation map in a snapshot folder (a leading dot: never a disk file). */
function stagedMap(folder: string, file: string): string {
  return join(folder, `.merge-${file}.alloc`);
}

/** True when a snapshot merge was interrupted and must be finished before the snapshots are used. */
export async function hasPendingMerge(paths: FileVmPaths): Promise<boolean> {
  return pathExists(journalPath(paths));
}

/**
 * Finishes a snapshot merge that a crash interrupted (does nothing when none is pending). The caller
 * holds the VM lock.
 *
 * @throws {@link @replikit/core!FormatError} for a malformed journal or a snapshot folder removed by hand.
 */
export async function finishSnapshotMerge(paths: FileVmPaths, vmId: string, hook?: FaultHook): Promise<void> {
  const file = journalPath(paths);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw toStorageError(error, `reading ${file}`);
  }
  await runMerge(paths, vmId, parseJournal(text, file), hook);
}

/**
 * Takes the VM lock and finishes an interrupted snapshot merge, when there is one.
 *
 * @throws {@link @replikit/core!ConflictError} when another process holds the VM lock (it is probably finishing it).
 */
export async function recoverSnapshotMerge(paths: FileVmPaths, vmId: string, hook?: FaultHook): Promise<void> {
  if (!(await hasPendingMerge(paths))) return;
  const lock = await acquireLockFile(paths.vmLock, `VM '${vmId}' (a snapshot is being deleted or taken)`);
  try {
    await finishSnapshotMerge(paths, vmId, hook);
  } finally {
    await lock.release();
  }
}

/**
 * Deletes a snapshot, in time proportional to what changed rather than to the disk:
 *
 * - when no snapshot builds on it, its folder is removed; if it was a diff and the VM's change
 *   bitmap counts from it, the bitmap first absorbs its map and counts from its base instead (so
 *   the next snapshot can still be a diff);
 * - when a snapshot C builds on it (S), S is merged into C under a journal: a diff S gives C the
 *   granules C lacks and C then builds on S's base; a full S receives C's granules, and its image
 *   becomes C's full image with the union of both allocation maps.
 *
 * With `keepMetadata`, `snapshot.json` stays (marked `dataDeleted`) and only the data goes.
 * Deleting a missing snapshot does nothing. The caller holds neither the VM lock nor the lock file.
 *
 * @param openReaders - How many readers of a snapshot this process has open: a full snapshot that a
 * successor builds on cannot be deleted while it is read (`E_CONFLICT`); other deletions leave open
 * readers their data (unlinked files stay readable through open handles).
 */
export async function deleteSnapshotOf(
  paths: FileVmPaths,
  vmId: string,
  snapshotId: string,
  keepMetadata: boolean,
  hook?: FaultHook,
  openReaders: (snapshotId: string) => number = () => 0,
): Promise<void> {
  const folder = snapshotDir(paths.dir, snapshotId);
  if (!(await pathExists(folder)) && !(await hasPendingMerge(paths))) return;
  const lock = await acquireLockFile(
    paths.vmLock,
    `VM '${vmId}' (a snapshot is being taken or a guest write is running)`,
  );
  try {
    await finishSnapshotMerge(paths, vmId, hook);
    if (!(await pathExists(folder))) return;
    const doomed = await readSnapshotJson(paths, vmId, snapshotId);
    if (doomed.dataDeleted) {
      if (!keepMetadata) await removeSnapshotFolder(paths, snapshotId);
      return;
    }
    const all = await listSnapshotJsons(paths, vmId);
    const children = all.filter(
      (s) => !s.dataDeleted && s.disks.some((d) => d.kind === 'diff' && d.base === snapshotId),
    );
    if (children.length > 1) {
      throw new StateError(
        `snapshot '${snapshotId}' of VM '${vmId}' has ${children.length} successors building on it (${children.map((c) => c.id).join(', ')}); delete the newer ones first`,
      );
    }
    const child = children[0];
    if (!child) {
      await foldIntoTracking(paths, doomed, hook);
      await dropData(paths, doomed, keepMetadata);
      return;
    }
    const journal = planMerge(doomed, child, keepMetadata);
    const readers = openReaders(snapshotId);
    if (readers > 0 && journal.steps.some((step) => step.mode === 'into-doomed-full')) {
      // Its image is about to receive the successor's blocks: an open reader would see them.
      throw new ConflictError(
        `snapshot '${snapshotId}' of VM '${vmId}' has ${readers} open reader(s) in this process and its image is about to become '${child.id}''s; close them before deleting it`,
      );
    }
    await writeJsonAtomic(journalPath(paths), journal);
    await hook?.('merge:journal-written');
    await runMerge(paths, vmId, journal, hook);
  } catch (error) {
    throw toStorageError(error, `deleting snapshot '${snapshotId}' of VM '${vmId}'`);
  } finally {
    await lock.release();
  }
}

/**
 * When the change bitmap of a disk counts from `doomed` (its newest snapshot) and `doomed` is a diff,
 * the bitmap takes the diff's granules and counts from the diff's base: changes since the base are
 * the diff's plus those since `doomed`. Written atomically before the snapshot goes.
 */
async function foldIntoTracking(paths: FileVmPaths, doomed: SnapshotJson, hook?: FaultHook): Promise<void> {
  const vm = await readVmJson(paths.dir);
  if (!vm.changeTracking || vm.replica) return;
  let folded = false;
  for (const disk of doomed.disks) {
    if (disk.kind !== 'diff') continue;
    const live = vm.disks.find((d) => d.id === disk.id && d.file === disk.file && d.size === disk.size);
    if (!live) continue;
    const cbtPath = cbtPathOf(join(paths.dir, live.file));
    const found = await readChangeBitmap(cbtPath, live.size);
    if (found.state !== 'valid' || found.cbt.epoch !== doomed.id) continue;
    const map = await readMap(join(snapshotDir(paths.dir, doomed.id), disk.file), disk.size);
    found.cbt.map.union(map);
    found.cbt.epoch = disk.base!;
    await writeChangeBitmap(cbtPath, found.cbt);
    folded = true;
  }
  if (folded) await hook?.('delete:tracking-folded');
}

/** Removes a snapshot's data: its folder, or with `keepMetadata` its images and maps only. */
async function dropData(paths: FileVmPaths, meta: SnapshotJson, keepMetadata: boolean): Promise<void> {
  if (!keepMetadata) {
    await removeSnapshotFolder(paths, meta.id);
    return;
  }
  const folder = snapshotDir(paths.dir, meta.id);
  if (!meta.dataDeleted) await writeJsonAtomic(join(folder, SNAPSHOT_JSON), { ...meta, dataDeleted: true });
  for (const disk of meta.disks) {
    await discard(paths.snapshots, join(folder, disk.file), `${meta.id}-${disk.file}`);
    await rm(join(folder, `${disk.file}.alloc`), { force: true });
    await rm(stagedMap(folder, disk.file), { force: true });
  }
  await fsyncDir(folder);
}

function planMerge(doomed: SnapshotJson, child: SnapshotJson, keepMetadata: boolean): MergeJournal {
  const steps: MergeJournal['steps'] = [];
  const childDisks = child.disks.map((c): SnapshotDiskJson => {
    if (c.kind !== 'diff' || c.base !== doomed.id) return c;
    const s = doomed.disks.find((d) => d.id === c.id);
    if (!s || s.size !== c.size || s.file !== c.file) {
      throw new FormatError(`snapshot '${child.id}' builds disk '${c.id}' on '${doomed.id}', which has no such disk`);
    }
    const { kind: _kind, base: _base, ...rest } = c;
    if (s.kind === 'diff') {
      steps.push({ file: c.file, mode: 'into-child-diff' });
      return { ...rest, allocation: 'bitmap', kind: 'diff', base: s.base! };
    }
    steps.push({ file: c.file, mode: 'into-doomed-full' });
    return { ...rest, allocation: s.allocation };
  });
  return { version: 1, doomed: doomed.id, child: child.id, keepMetadata, phase: 'copy', steps, childDisks };
}

async function runMerge(paths: FileVmPaths, vmId: string, journal: MergeJournal, hook?: FaultHook): Promise<void> {
  const sDir = snapshotDir(paths.dir, journal.doomed);
  const cDir = snapshotDir(paths.dir, journal.child);
  const child = await readSnapshotJson(paths, vmId, journal.child);
  if (journal.phase === 'copy') {
    const doomed = await readSnapshotJson(paths, vmId, journal.doomed);
    for (const step of journal.steps) {
      const cDisk = child.disks.find((d) => d.file === step.file)!;
      const sDisk = doomed.disks.find((d) => d.file === step.file)!;
      if (!cDisk || !sDisk) throw new FormatError(`merge journal names disk file '${step.file}' that is gone`);
      const size = cDisk.size;
      const cMap = await readMap(join(cDir, step.file), size);
      if (step.mode === 'into-child-diff') {
        const sMap = await readMap(join(sDir, step.file), size);
        const missing = sMap.clone();
        for (let i = 0; i < missing.bits.length; i++) missing.bits[i]! &= ~cMap.bits[i]!;
        await copyGranules(join(sDir, step.file), join(cDir, step.file), missing, true);
        await writeFileAtomic(stagedMap(cDir, step.file), cMap.union(sMap).encode());
      } else {
        await copyGranules(join(cDir, step.file), join(sDir, step.file), cMap, false);
        if (sDisk.allocation === 'bitmap') {
          const sMap = await readMap(join(sDir, step.file), size);
          await writeFileAtomic(stagedMap(sDir, step.file), sMap.union(cMap).encode());
        }
      }
    }
    journal.phase = 'switch';
    await writeJsonAtomic(journalPath(paths), journal);
    await hook?.('merge:copied');
  }
  if (journal.phase === 'switch' || journal.phase === 'drop') {
    for (const step of journal.steps) {
      const cStaged = stagedMap(cDir, step.file);
      const sStaged = stagedMap(sDir, step.file);
      if (step.mode === 'into-child-diff') {
        if (await pathExists(cStaged)) await rename(cStaged, join(cDir, `${step.file}.alloc`));
      } else {
        if (await pathExists(join(sDir, step.file))) {
          // The child's diff goes first (unlinking it would cost ~0.1 s here), then the image takes its place.
          await discard(paths.snapshots, join(cDir, step.file), `${journal.child}-${step.file}`);
          await rename(join(sDir, step.file), join(cDir, step.file));
        }
        if (await pathExists(sStaged)) await rename(sStaged, join(cDir, `${step.file}.alloc`));
        const entry = journal.childDisks.find((d) => d.file === step.file);
        if (entry?.allocation === 'none') await rm(join(cDir, `${step.file}.alloc`), { force: true });
      }
    }
    await fsyncDir(cDir);
    if (await pathExists(sDir)) await fsyncDir(sDir);
    const version = journal.childDisks.some((d) => d.kind === 'diff') ? 2 : 1;
    const merged: SnapshotJson = { ...child, version, disks: journal.childDisks };
    await writeJsonAtomic(join(cDir, SNAPSHOT_JSON), merged);
    // No 'drop' record needed: finishing the switch again is idempotent.
    await hook?.('merge:switched');
  }
  if (await pathExists(sDir)) {
    const doomed = await readSnapshotJson(paths, vmId, journal.doomed);
    await dropData(paths, doomed, journal.keepMetadata);
  }
  await hook?.('merge:dropped');
  await rm(journalPath(paths), { force: true });
  await fsyncDir(paths.snapshots);
}

/** Reads the allocation map `<image>.alloc` of a snapshot image of `size` bytes. */
async function readMap(image: string, size: number): Promise<AllocationMap> {
  const file = `${image}.alloc`;
  let data: Uint8Array;
  try {
    data = await readFile(file);
  } catch (error) {
    throw toStorageError(error, `reading the allocation map ${file}`);
  }
  const map = AllocationMap.decode(data, size, file);
  if (map.granule !== ALLOCATION_GRANULE) {
    throw new FormatError(`${file} has ${map.granule}-byte granules, not ${ALLOCATION_GRANULE}; it cannot be merged`);
  }
  return map;
}

/**
 * Copies the granules marked in `which` from `src` to `dst` at the same offsets, in runs of up to
 * 1 MiB, then fsyncs `dst`. With `skipZeros`, granules that read as zero are not written (the
 * destination holds a hole there).
 */
async function copyGranules(src: string, dst: string, which: AllocationMap, skipZeros: boolean): Promise<void> {
  let input: FileHandle | undefined;
  let output: FileHandle | undefined;
  try {
    input = await openDataFile(src, READ, { what: 'a snapshot layer' });
    output = await openDataFile(dst, READ_WRITE, { what: 'a snapshot layer' });
    const granule = which.granule;
    const buffers = Array.from({ length: COPY_LANES }, () => Buffer.allocUnsafeSlow(IO_CHUNK));
    await forEachConcurrently(splitExtents(which.extents(), IO_CHUNK), COPY_LANES, async (piece, lane) => {
      const buffer = buffers[lane]!;
      const got = await readFully(input!, buffer, 0, piece.length, piece.offset);
      if (got < piece.length) {
        throw new FormatError(`${src} ends at ${piece.offset + got} bytes, inside a granule it must hold`);
      }
      if (!skipZeros) {
        await writeFully(output!, buffer.subarray(0, piece.length), piece.offset);
        return;
      }
      for (let g = 0; g < piece.length; g += granule) {
        const part = buffer.subarray(g, Math.min(g + granule, piece.length));
        if (!isAllZero(part)) await writeFully(output!, part, piece.offset + g);
      }
    });
    await output.sync();
  } finally {
    await input?.close();
    await output?.close();
  }
}

function parseJournal(text: string, file: string): MergeJournal {
  const bad = (why: string): never => {
    throw new FormatError(`${file} is malformed (${why}); the interrupted snapshot deletion cannot be finished`, {
      details: { file },
    });
  };
  let raw: MergeJournal;
  try {
    raw = JSON.parse(text) as MergeJournal;
  } catch {
    return bad('not JSON');
  }
  if (typeof raw !== 'object' || raw === null || raw.version !== 1) return bad('version');
  assertSafeName(raw.doomed, `${file}: doomed`);
  assertSafeName(raw.child, `${file}: child`);
  if (typeof raw.keepMetadata !== 'boolean') bad('keepMetadata');
  if (raw.phase !== 'copy' && raw.phase !== 'switch' && raw.phase !== 'drop') bad('phase');
  if (!Array.isArray(raw.steps) || !Array.isArray(raw.childDisks)) return bad('steps or childDisks');
  for (const step of raw.steps) {
    assertSafeName(step?.file, `${file}: steps[].file`);
    if (step.mode !== 'into-child-diff' && step.mode !== 'into-doomed-full') bad('steps[].mode');
  }
  for (const disk of raw.childDisks) {
    assertSafeName(disk?.id, `${file}: childDisks[].id`);
    assertSafeName(disk.file, `${file}: childDisks[].file`);
    if (!Number.isSafeInteger(disk.size) || disk.size < 0) bad('childDisks[].size');
    if (disk.allocation !== 'bitmap' && disk.allocation !== 'none') bad('childDisks[].allocation');
    if (disk.kind === 'diff') assertSafeName(disk.base, `${file}: childDisks[].base`);
    else if (disk.kind !== undefined && disk.kind !== 'full') bad('childDisks[].kind');
  }
  return raw;
}
