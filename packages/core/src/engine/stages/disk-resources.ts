import type { BackupSession } from '../../contracts/backup-sink.js';
import type { DiskReader, DiskRef } from '../../contracts/disk.js';
import type { Hypervisor } from '../../contracts/hypervisor.js';
import type { CacheReader, CacheWriter } from '../../contracts/replication-cache.js';
import type { DiskChannel } from '../../contracts/transport.js';
import { ConflictError, StateError } from '../../errors.js';
import { type BlockRange, toBlockRanges } from '../block-ranges.js';
import { plannedOf, preparedOf, snapshotOf } from '../run-journal.js';
import type { DiskRecord } from '../run-record.js';
import { cacheKeyOf } from './cache-key.js';
import type { RunContext } from './stage.js';

// What one disk's transfer opens besides its reader and channel: the delta base, the caches, the
// backup session, and the blocks it reads.

/** The previous snapshot's disk, for sending changed blocks as deltas, when it can serve. */
export async function deltaBaseFor(
  ctx: RunContext,
  source: Hypervisor,
  disk: DiskRecord,
  channel: DiskChannel,
): Promise<DiskReader | undefined> {
  const base = preparedOf(ctx.record).start.baseSnapshot?.disks[disk.position];
  const compared = disk.mode === 'hash-diff' || (disk.mode === 'tracked' && disk.digestSource === 'cache');
  if (!compared || !channel.sendDelta || !base || base.size !== disk.size) return undefined;
  return source.openReader(base, { signal: ctx.signal }).catch(() => undefined);
}

/** Starts (or continues) the single-pass backup version of this run. */
export async function openBackup(ctx: RunContext): Promise<BackupSession | undefined> {
  const record = ctx.record;
  const backup = plannedOf(record).backup;
  if (!backup || !ctx.deps.backup) return undefined;
  const snapshot = snapshotOf(record);
  return ctx.deps.backup.begin(
    {
      vm: snapshot.vmId,
      runId: record.runId,
      blockSize: record.blockSize,
      disks: snapshot.disks.map((disk) => ({ id: disk.id, size: disk.size })),
      ...(backup.baseVersion ? { baseVersion: backup.baseVersion } : {}),
    },
    { signal: ctx.signal },
  );
}

/** Opens the trusted cache a disk reads and the new cache it writes, falling back when they are gone. */
export async function openCache(
  ctx: RunContext,
  disk: DiskRecord,
  blockCount: number,
): Promise<{ reader: CacheReader | undefined; writer: CacheWriter | undefined }> {
  const cache = ctx.deps.cache;
  const record = ctx.record;
  let reader: CacheReader | undefined;
  let writer: CacheWriter | undefined;
  if (!cache) return { reader, writer };
  if (disk.mode !== 'full' && disk.digestSource === 'cache') {
    const fingerprint = plannedOf(record).replicaFingerprint ?? '';
    const opened = await cache.open(
      cacheKeyOf(record, disk),
      { blockSize: record.blockSize, blockCount, digest: record.digest, fingerprint },
      { signal: ctx.signal },
    );
    // replanIfCacheLost found it usable a moment ago: the plan is not rewritten under the transfer.
    if (opened.status !== 'ok') {
      throw new ConflictError(
        `the replication cache of disk '${disk.replicaDiskId}' changed while run ${record.runId} was opening it; run the job again`,
      );
    }
    reader = opened.reader;
  }
  if (disk.writesCache) {
    writer = await cache.begin(
      cacheKeyOf(record, disk),
      { runId: record.runId, blockSize: record.blockSize, blockCount, digest: record.digest },
      disk.checkpointBlock,
    );
    if (writer.resumedFrom < disk.checkpointBlock) {
      await writer.close();
      await cache.abortPending(cacheKeyOf(record, disk), record.runId);
      writer = undefined;
      disk.writesCache = false;
      ctx.warn(
        'W_CACHE_LOST',
        `the new replication cache of disk '${disk.replicaDiskId}' was lost in the crash; the next run reads the replica`,
      );
    }
  }
  return { reader, writer };
}

/**
 * The blocks a disk reads from its checkpoint on: the tracked ones (`tracked`), or the allocated ones.
 *
 * @throws {@link StateError} when the change tracker no longer knows the changes it vouched for at planning.
 */
export async function rangesFor(
  ctx: RunContext,
  source: Hypervisor,
  disk: DiskRecord,
  snapshotDisk: DiskRef,
  allocated: AsyncIterable<{ offset: number; length: number }>,
): Promise<BlockRange[]> {
  const blockSize = ctx.record.blockSize;
  const blockCount = Math.ceil(disk.size / blockSize);
  if (disk.mode === 'tracked') {
    const base = preparedOf(ctx.record).start.baseSnapshot;
    const changes =
      base &&
      (await source.changeTracker?.changes(snapshotDisk, base, snapshotOf(ctx.record), {
        signal: ctx.signal,
      }));
    if (!changes) throw new StateError(`the change tracker no longer knows the changes of disk '${disk.sourceDiskId}'`);
    return toBlockRanges(changes, blockSize, blockCount, disk.checkpointBlock, {
      signal: ctx.signal,
      mergeGap: 0,
    });
  }
  return toBlockRanges(allocated, blockSize, blockCount, disk.checkpointBlock, { signal: ctx.signal });
}
