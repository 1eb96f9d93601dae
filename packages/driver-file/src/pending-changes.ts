import { stat } from 'node:fs/promises';
import type { DiskRef, Extent, OperationOptions, Snapshot } from '@replikit/core';
import { throwIfAborted, toStorageError } from '@replikit/core';
import { cbtPathOf, readChangeBitmap, sameStamp, stampOf } from './change-bitmap.js';
import { assertSafeName } from './names.js';
import { diskImagePath, type FileVmPaths } from './paths.js';
import { listSnapshotJsons } from './snapshots.js';
import { readVmJson } from './vm-metadata.js';

/**
 * The extents of the live disk `disk.id` written since snapshot `base`, read from its change
 * bitmap without taking a snapshot or writing anything: exactly the map a snapshot taken now would
 * record as its diff over `base`. `undefined` when such a snapshot would be a full one (tracking
 * off, the bitmap missing, corrupt or open, the image written behind the tracker's back) or when
 * `base` is not the VM's newest snapshot (the bitmap then counts from another one).
 */
export async function pendingChanges(
  paths: FileVmPaths,
  disk: DiskRef,
  base: Snapshot,
  options?: OperationOptions,
): Promise<AsyncIterable<Extent> | undefined> {
  assertSafeName(disk?.id, 'disk id');
  assertSafeName(base?.id, 'base snapshot id');
  const vm = await readVmJson(paths.dir);
  const entry = vm.disks.find((d) => d.id === disk.id);
  if (vm.changeTracking !== true || vm.replica || !entry) return undefined;
  const snapshots = await listSnapshotJsons(paths, base.vmId);
  const newest = snapshots
    .map((s) => s.id)
    .sort()
    .at(-1);
  const baseDisk = snapshots.find((s) => s.id === base.id)?.disks.find((d) => d.id === entry.id);
  if (newest !== base.id || !baseDisk || baseDisk.size !== entry.size || baseDisk.file !== entry.file) return undefined;
  const image = diskImagePath(paths.dir, entry.file);
  const found = await readChangeBitmap(cbtPathOf(image), entry.size);
  if (found.state !== 'valid') return undefined;
  const stamp = await stat(image, { bigint: true }).catch((error: unknown) => {
    throw toStorageError(error, `reading the state of ${image}`);
  });
  if (!sameStamp(found.cbt.stamp, stampOf(stamp))) return undefined;
  if (found.cbt.epoch !== '' && found.cbt.epoch !== base.id) return undefined;
  const map = found.cbt.map;
  return (async function* () {
    for (const extent of map.extents()) {
      throwIfAborted(options?.signal);
      yield extent;
    }
  })();
}
