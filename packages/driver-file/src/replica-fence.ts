import { LeaseLostError, type TargetFence } from '@replikit/core';
import { acquireLockFile, folderMutex } from './locks.js';
import type { FileVmPaths } from './paths.js';
import { readVmJson, writeVmJson } from './vm-metadata.js';

/**
 * Checks `fence` against the highest lease epoch replica `paths` has seen (`vm.json`'s
 * `replica.fenceEpoch`) and raises that to `fence.epoch`, durably, before the caller goes on.
 * The caller holds the replica's lock (the in-process folder mutex and the replica lock file), so
 * the check, the raise and the operation that follows are one step for every other fenced caller.
 * Does nothing without a fence.
 *
 * @throws {@link @replikit/core!LeaseLostError} when the replica has seen a higher epoch: a newer
 * lease holder has claimed it, and this caller must not change it. Nothing was changed.
 */
export async function checkAndRaiseFence(
  paths: FileVmPaths,
  fence: TargetFence | undefined,
  what: string,
): Promise<void> {
  if (!fence) return;
  const vm = await readVmJson(paths.dir);
  const seen = vm.replica?.fenceEpoch ?? 0;
  if (fence.epoch < seen) {
    throw new LeaseLostError(
      `${what} under lease epoch ${fence.epoch} was refused: replica '${vm.name}' has seen epoch ${seen}, a newer lease holder; stop writing it`,
      { details: { replica: vm.name, epoch: fence.epoch, fenceEpoch: seen } },
    );
  }
  if (fence.epoch > seen && vm.replica) {
    await writeVmJson(paths.dir, { ...vm, replica: { ...vm.replica, fenceEpoch: fence.epoch } });
  }
}

/**
 * Checks and raises the fence of a claim ({@link checkAndRaiseFence}) under the replica's lock
 * (the folder mutex and the replica lock file, which every commit and revert also hold), so no
 * commit or revert of an older epoch is half-way through when the claim's epoch is recorded.
 */
export async function fenceClaim(paths: FileVmPaths, fence: TargetFence | undefined, what: string): Promise<void> {
  if (!fence) return;
  await folderMutex.run(paths.dir, async () => {
    const lock = await acquireLockFile(paths.replicaLock, `replica ${paths.dir}`);
    try {
      await checkAndRaiseFence(paths, fence, what);
    } finally {
      await lock.release();
    }
  });
}
