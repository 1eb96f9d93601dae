import { setMaxListeners } from 'node:events';
import pLimit from 'p-limit';
import type { BackupSession } from '../../contracts/backup-sink.js';
import type { DiskReader } from '../../contracts/disk.js';
import type { Hypervisor } from '../../contracts/hypervisor.js';
import type { BlockChannel } from '../../contracts/transport.js';
import { TokenBucket } from '../../util/token-bucket.js';
import { countBlocks, countBytes } from '../block-ranges.js';
import { startDiskSpan } from '../disk-span.js';
import { transferDisk } from '../disk-transfer.js';
import { toRunRecord } from '../journal-format.js';
import { ALWAYS_FULL_METHODS } from '../plan/plan-disk.js';
import { plannedOf, preparedOf, snapshotOf } from '../run-journal.js';
import { type DiskRecord, sumStats } from '../run-record.js';
import { isRunStopped, runStoppedError, stopReasonOf } from '../run-stop.js';
import { segmentBytes } from '../segment-reader.js';
import { transferSteps } from '../transfer/transfer-steps.js';
import { cacheKeyOf } from './cache-key.js';
import { deltaBaseFor, openBackup, openCache, rangesFor } from './disk-resources.js';
import { transferByPull } from './pull-transfer.js';
import { replanIfCacheLost } from './replan-disk.js';
import type { RunContext, Stage } from './stage.js';
import { transferWholeVm } from './whole-vm-transfer.js';

/** Bytes per source read of tracked blocks (the segment reader's default), or one block when larger. */
const READ_BYTES = 1024 * 1024;
/** Bytes per source read of a scan, or one block when larger. */
const SCAN_READ_BYTES = 4 * 1024 * 1024;

/**
 * `transfer`: moves every disk as its journaled plan says, from its checkpoint on, through the
 * run's transport; each disk's cache and delta base are opened here and closed when it ends.
 */
class TransferStage {
  constructor(private readonly ctx: RunContext) {}

  /** Sends every disk not done yet, under the job's parallelism; the first failure stops the others. */
  async run(): Promise<void> {
    const record = this.ctx.record;
    const { replica } = preparedOf(record);
    const { source, target } = await this.ctx.drivers();
    // Idempotent on resume: a crash may have come before the mark was written.
    await target.markReplica(replica, 'in-progress', { signal: this.ctx.signal });
    // A whole-VM copy and a pull have no checkpoint of their own: a stop ends them where they are.
    const suspend = this.ctx.suspend;
    const unchecked = suspend ? { ...this.ctx, signal: AbortSignal.any([this.ctx.signal, suspend]) } : this.ctx;
    if (ALWAYS_FULL_METHODS.has(record.job.method)) return transferWholeVm(unchecked, source, target);
    if (record.job.options.direction === 'pull') return transferByPull(unchecked, source, target);
    const transport = await this.ctx.deps.transport(target, toRunRecord(record), this.ctx.deps.hasher);
    const channel = await transport.open(
      { runId: record.runId, replica, blockSize: record.blockSize, digest: record.digest },
      { signal: this.ctx.signal },
    );
    const inner = new AbortController();
    const signal = AbortSignal.any([this.ctx.signal, inner.signal]);
    // Every read and send in flight listens on this signal: up to a window of them per disk, on
    // `parallelDisks` disks. More than Node's default of 10 is normal here, not a leak.
    setMaxListeners(Math.max(64, record.job.options.parallelDisks * 64), signal);
    const limit = pLimit(record.job.options.parallelDisks);
    const throttle = record.job.options.bandwidthLimit ? new TokenBucket(record.job.options.bandwidthLimit) : undefined;
    const digestOnWire = transport.name !== 'inprocess';
    const backup = await openBackup(this.ctx);
    this.ctx.progress.start();
    let firstError: unknown;
    const tasks = record.disks
      .filter((disk) => !disk.done)
      .map((disk) =>
        limit(async () => {
          const span = startDiskSpan({ runId: record.runId, job: record.job.name }, disk, this.ctx.traceContext);
          try {
            // A disk that has not started when the run is stopped does not start.
            if (this.ctx.suspend?.aborted) throw runStoppedError(record.runId, stopReasonOf(this.ctx.suspend));
            await this.transferOne(source, disk, channel, { signal, throttle, digestOnWire, backup });
            span.end();
          } catch (error) {
            span.end(error);
            firstError ??= error;
            // A disk stopped at its checkpoint leaves the others to reach theirs.
            if (!isRunStopped(error)) inner.abort(error);
          }
        }),
      );
    try {
      await Promise.all(tasks);
      if (firstError !== undefined) throw firstError;
    } finally {
      this.ctx.progress.stop();
      await channel.close().catch((error: unknown) => {
        firstError ??= error;
      });
      await backup?.close().catch((error: unknown) => {
        firstError ??= error;
      });
    }
    if (firstError !== undefined) throw firstError;
    sumStats(this.ctx.record);
    this.ctx.progress.emit(true);
  }

  private async transferOne(
    source: Hypervisor,
    disk: DiskRecord,
    channel: BlockChannel,
    options: {
      signal: AbortSignal;
      throttle: TokenBucket | undefined;
      digestOnWire: boolean;
      backup: BackupSession | undefined;
    },
  ): Promise<void> {
    const record = this.ctx.record;
    const snapshotDisk = snapshotOf(record).disks[disk.position]!;
    const replicaDisk = preparedOf(record).replica.disks[disk.position]!;
    const blockCount = Math.ceil(disk.size / record.blockSize);
    await replanIfCacheLost(this.ctx, disk, blockCount);
    // A tracked disk asks its change tracker before the reader opens: some readers attach the
    // snapshot's disk (Xen's appliance plugs its VDI), and XAPI answers no changed blocks of an
    // attached VDI (VDI_IN_USE), which a resumed run, with nothing cached, would take for "cannot tell".
    const trackedRanges =
      disk.mode === 'tracked' ? await rangesFor(this.ctx, source, disk, snapshotDisk, noExtents()) : undefined;
    const reader = await source.openReader(snapshotDisk, { signal: options.signal });
    try {
      const ranges =
        trackedRanges ??
        (await rangesFor(this.ctx, source, disk, snapshotDisk, reader.allocated({ signal: options.signal })));
      const examineAll = disk.mode === 'hash-diff' || (disk.mode === 'full' && !disk.targetKnownZero);
      if (disk.stats.blocksTotal === 0) {
        disk.stats.blocksTotal = examineAll ? blockCount : countBlocks(ranges);
        disk.stats.bytesTotal = examineAll ? disk.size : countBytes(ranges, record.blockSize, disk.size);
      }
      const diskChannel = await channel.openDisk(replicaDisk, { signal: options.signal });
      const tracked = disk.mode === 'tracked';
      // Tracked blocks prefetch their delta base with every segment: it is opened now. A scan
      // opens it when the first changed block needs it (one that finds no change never does).
      let opened: Promise<DiskReader | undefined> | undefined;
      const openDeltaBase = () => {
        opened ??= deltaBaseFor(this.ctx, source, disk, diskChannel);
        return opened;
      };
      const trackedBase = tracked ? await openDeltaBase() : undefined;
      const deltaBase = tracked ? trackedBase : openDeltaBase;
      const { reader: cacheReader, writer: cacheWriter } = await openCache(this.ctx, disk, blockCount);
      // Read buffers come from the engine's shelf (kept from earlier disks and runs), and go back
      // to it once the transfer is over. Tracked blocks are scattered: small segments, so more of
      // them are kept in flight. A scan reads larger segments: fewer messages to hashing threads.
      // Whole blocks per read, at least one, so a block larger than the read size is read whole.
      // Reads larger than planned (blocks of 2 MiB and more) are kept fewer in flight, for about
      // the planned bytes in flight, but always at least two reads ahead.
      const plannedBytes = tracked ? READ_BYTES : SCAN_READ_BYTES;
      const readBytes = segmentBytes(plannedBytes, record.blockSize);
      const plannedAhead = tracked ? this.ctx.deps.readAhead * 8 : this.ctx.deps.readAhead;
      const readAhead =
        readBytes > plannedBytes
          ? Math.min(plannedAhead, Math.max(2, Math.floor((plannedAhead * plannedBytes) / readBytes)))
          : plannedAhead;
      const shelf = this.ctx.deps.buffers;
      const hasher = this.ctx.deps.hasher;
      const buffers = shelf.take(hasher, readAhead + 2, readBytes);
      const baseBuffers = trackedBase ? shelf.take(hasher, readAhead + 2, readBytes) : undefined;
      try {
        const steps = transferSteps({
          disk,
          reader,
          channel: diskChannel,
          ...(cacheReader ? { cacheReader } : {}),
          ...(cacheWriter ? { cacheWriter } : {}),
          ...(options.backup
            ? {
                backup: {
                  disk: options.backup.disk(snapshotDisk.id),
                  hasBase: plannedOf(record).backup?.baseVersion !== undefined,
                },
              }
            : {}),
          ...(deltaBase ? { deltaBase } : {}),
          buffers,
          ...(baseBuffers ? { baseBuffers } : {}),
          readBytes,
          readAhead,
          blockSize: record.blockSize,
          hasher,
          digestOnWire: options.digestOnWire,
          ...(options.throttle ? { throttle: options.throttle } : {}),
          signal: options.signal,
        });
        await transferDisk({
          ...steps,
          record: disk,
          ranges,
          examineAll,
          checkpointEveryMs: this.ctx.deps.checkpointEveryMs,
          ...(this.ctx.suspend
            ? {
                suspend: this.ctx.suspend,
                stopped: () => runStoppedError(record.runId, stopReasonOf(this.ctx.suspend!)),
              }
            : {}),
          beforeCheckpoint: async (count: number) => {
            await cacheWriter?.checkpoint(count);
            await options.backup?.checkpoint();
          },
          onCheckpoint: async () => {
            sumStats(this.ctx.record);
            await this.ctx.save();
          },
          onProgress: () => this.ctx.progress.changed(),
        });
      } finally {
        // transferDisk has settled every read and send that used the buffers.
        shelf.give(hasher, buffers);
        if (baseBuffers) shelf.give(hasher, baseBuffers);
        await (await opened)?.close().catch(() => undefined);
        await cacheReader?.close().catch(() => undefined);
        await cacheWriter?.close().catch(() => undefined);
        await diskChannel.close().catch(() => undefined);
      }
    } finally {
      await reader.close().catch(() => undefined);
    }
  }
}

/** Drops what a failed run had begun writing into the replication caches and the block store. */
async function abortPendingStores(ctx: RunContext): Promise<void> {
  const record = ctx.record;
  for (const disk of record.disks) {
    if (disk.writesCache && ctx.deps.cache) await ctx.deps.cache.abortPending(cacheKeyOf(record, disk), record.runId);
  }
  const snapshot = record.stages.snapshot?.snapshot;
  if (record.stages.plan?.backup && ctx.deps.backup && snapshot) {
    await ctx.deps.backup.abortPending(snapshot.vmId, record.runId);
  }
}

/**
 * `transfer` as a {@link Stage}. Undo: what the run began writing into the replication caches and
 * the block store is dropped (the replica's writes are the `plan` stage's to undo).
 */
export const transferStage: Stage = {
  state: 'transfer',
  run: (context) => new TransferStage(context).run(),
  ran: (context) => context.record.stages.plan !== undefined,
  undo: (context) => abortPendingStores(context),
};

/** No extents: what a tracked disk's ranges are computed without (they come from the change tracker). */
async function* noExtents(): AsyncIterable<{ offset: number; length: number }> {}
