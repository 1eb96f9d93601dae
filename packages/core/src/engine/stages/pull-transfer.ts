import pLimit from 'p-limit';
import type { DiskPullResult, Hypervisor, Replica, Snapshot } from '../../contracts/hypervisor.js';
import { DriverError, throwIfAborted } from '../../errors.js';
import { startDiskSpan } from '../disk-span.js';
import { preparedOf, snapshotOf } from '../run-journal.js';
import { type DiskRecord, sumStats } from '../run-record.js';
import type { RunContext } from './stage.js';

/** The rule whose warning says a pull ignores the replication cache (see `seed-rules.ts`). */
const CACHE_RULE = 'cache-ignored-for-pull';

/**
 * The transfer of a pull job (`options.direction: 'pull'`, method `abd`): for each disk not done,
 * the source offers the snapshot disk ({@link Hypervisor.pullSource}) and the target brings the
 * replica disk up to date from it itself ({@link Hypervisor.pullDiskFrom}), comparing digests computed
 * on both sides; the engine's host carries no block and the replication cache takes no part. The
 * writes stay pending until `commit` makes them a restore point, as a push's do; a failed run is
 * rolled back by the `plan` stage's undo. A disk is journaled done once its pull returned; a
 * resumed run pulls the others again (a pull only copies what still differs). Up to
 * `options.parallelDisks` disks pull at once, sharing `options.bandwidthLimit` evenly.
 *
 * @throws `E_DRIVER` when either driver lacks its hook (validation stops such a job first, unless
 * the engine runs without rule sets).
 */
export async function transferByPull(ctx: RunContext, source: Hypervisor, target: Hypervisor): Promise<void> {
  const record = ctx.record;
  if (!hasPullSource(source) || !hasPullDiskFrom(target)) {
    const which = source.pullSource ? `target driver '${target.kind}'` : `source driver '${source.kind}'`;
    throw new DriverError(`options.direction is 'pull', which the ${which} cannot do; set it to 'push'`);
  }
  if (record.job.options.replicationCache && !record.warnings.some((w) => w.message.startsWith(CACHE_RULE))) {
    ctx.warn(
      'W_RULE',
      `${CACHE_RULE}: options.replicationCache is true, but a pull compares digests of the replica itself; the cache is neither read nor written`,
    );
  }
  const replica = preparedOf(record).replica;
  const snapshot = snapshotOf(record);
  const pending = record.disks.filter((disk) => !disk.done);
  // `parallelDisks` pulls at once; `bandwidthLimit` is shared among them, so together they never
  // exceed it (each pull is paced by the agent that pulls).
  const parallel = Math.max(1, Math.min(record.job.options.parallelDisks, pending.length));
  const limit = record.job.options.bandwidthLimit;
  const share = limit === undefined ? undefined : Math.max(1, Math.floor(limit / parallel));
  const inner = new AbortController();
  const signal = AbortSignal.any([ctx.signal, inner.signal]);
  const run = pLimit(parallel);
  let firstError: unknown;
  ctx.progress.start();
  try {
    // Every pull is waited for before the stage ends, failed or not: the undo that follows a
    // failure must not race a pull still writing.
    await Promise.all(
      pending.map((disk) =>
        run(async () => {
          const span = startDiskSpan({ runId: record.runId, job: record.job.name }, disk, ctx.traceContext);
          try {
            // A disk not started when the run is cancelled (or another disk failed) must fail the
            // stage, never count as done.
            throwIfAborted(signal);
            await pullOne(ctx, source, target, { disk, snapshot, replica, signal, share });
            span.end();
          } catch (error) {
            span.end(error);
            firstError ??= error;
            inner.abort(error);
          }
        }),
      ),
    );
  } finally {
    ctx.progress.stop();
  }
  if (firstError !== undefined) throw firstError;
  ctx.progress.emit(true);
}

/** Pulls one disk and journals it done. */
async function pullOne(
  ctx: RunContext,
  source: Hypervisor & Required<Pick<Hypervisor, 'pullSource'>>,
  target: Hypervisor & Required<Pick<Hypervisor, 'pullDiskFrom'>>,
  job: {
    disk: DiskRecord;
    snapshot: Snapshot;
    replica: Replica;
    signal: AbortSignal;
    share: number | undefined;
  },
): Promise<void> {
  const { disk, snapshot, replica, signal, share } = job;
  const record = ctx.record;
  const blocks = Math.ceil(disk.size / record.blockSize);
  disk.stats.blocksTotal = blocks;
  disk.stats.bytesTotal = disk.size;
  const offer = await source.pullSource(snapshot, snapshot.disks[disk.position]!, { signal });
  let result: DiskPullResult;
  try {
    result = await target.pullDiskFrom(offer, replica, disk.position, {
      blockSize: record.blockSize,
      runId: record.runId,
      signal,
      ...(share !== undefined ? { bandwidthLimit: share } : {}),
    });
  } finally {
    await offer.close();
  }
  countPull(disk, result, blocks);
  sumStats(record);
  await ctx.save();
  ctx.progress.changed();
}

function hasPullSource(h: Hypervisor): h is Hypervisor & Required<Pick<Hypervisor, 'pullSource'>> {
  return typeof h.pullSource === 'function';
}

function hasPullDiskFrom(h: Hypervisor): h is Hypervisor & Required<Pick<Hypervisor, 'pullDiskFrom'>> {
  return typeof h.pullDiskFrom === 'function';
}

/** Journals what one disk's pull did: every block compared, the differing ones copied. */
function countPull(disk: DiskRecord, result: DiskPullResult, blocks: number): void {
  Object.assign(disk.stats, {
    blocksScanned: result.blocks,
    blocksChanged: result.copied,
    bytesScanned: disk.size,
    bytesRead: result.bytesRead,
    // The target reads its replica whole to digest it.
    bytesReadReplica: disk.size,
    bytesSent: result.bytesRead,
    bytesWritten: result.bytesWritten ?? result.bytesRead,
  });
  disk.checkpointBlock = blocks;
  disk.done = true;
}
