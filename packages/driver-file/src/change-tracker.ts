import type { DiskRef, Extent, OperationOptions, Snapshot } from '@replikit/core';
import { throwIfAborted } from '@replikit/core';
import { assertSafeName } from './names.js';
import type { FileVmPaths } from './paths.js';
import { locateSnapshotChain } from './snapshots.js';

/**
 * The extents of disk `disk.id` that changed between snapshots `base` and `current` of one VM: the
 * union of the maps of the diff snapshots above `base` in `current`'s chain (ascending, not
 * overlapping, granule-aligned, a superset of what changed). `undefined` when `base` is not in
 * that chain: tracking was off or lost for the disk, `base` was merged away, or it is newer.
 * The caller has finished any interrupted merge.
 */
export async function chainChanges(
  paths: FileVmPaths,
  disk: DiskRef,
  base: Snapshot,
  current: Snapshot,
  options?: OperationOptions,
): Promise<AsyncIterable<Extent> | undefined> {
  const currentId = assertSafeName(current?.id, 'snapshot id');
  assertSafeName(base?.id, 'base snapshot id');
  if (base.vmId !== current.vmId) return undefined;
  const { layers } = await locateSnapshotChain(paths, { ...disk, vmId: current.vmId, snapshotId: currentId });
  if (base.id === currentId) return empty();
  const below = layers.findIndex((layer) => layer.snapshotId === base.id);
  if (below < 0) return undefined;
  const union = layers[0]!.map!.clone();
  for (const layer of layers.slice(1, below)) union.union(layer.map!);
  return (async function* () {
    for (const extent of union.extents()) {
      throwIfAborted(options?.signal);
      yield extent;
    }
  })();
}

async function* empty(): AsyncIterable<Extent> {}
