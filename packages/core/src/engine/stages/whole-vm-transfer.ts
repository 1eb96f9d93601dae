import type { Hypervisor, Replica } from '../../contracts/hypervisor.js';
import { DriverError } from '../../errors.js';
import { startDiskSpan } from '../disk-span.js';
import { preparedOf, snapshotOf } from '../run-journal.js';
import { sumStats } from '../run-record.js';
import type { RunContext } from './stage.js';

/**
 * The transfer of a method that moves whole VMs (`xva`): the source exports the snapshot as one
 * stream ({@link Hypervisor.exportVm}) and the target imports it as the replica's pending version
 * ({@link Hypervisor.importVm}); `commit` then makes it the replica, as it does for blocks. The
 * bytes go from one platform to the other through this process, in the platform's own format:
 * the block transport and the replication cache take no part. A resumed run imports again (the
 * target replaces its own pending import); there is no checkpoint inside an export. Each disk
 * still has its `replikit.disk` span, all of them as long as the one stream.
 *
 * @throws `E_DRIVER` when either driver cannot move whole VMs.
 */
export async function transferWholeVm(ctx: RunContext, source: Hypervisor, target: Hypervisor): Promise<void> {
  const record = ctx.record;
  const method = record.job.method;
  if (!source.exportVm || !target.importVm) {
    const which = source.exportVm ? `target driver '${target.kind}'` : `source driver '${source.kind}'`;
    throw new DriverError(`method '${method}' moves whole VMs, which the ${which} cannot do; use 'qhybrid'`);
  }
  if (record.disks.every((disk) => disk.done)) return;
  const replica: Replica = preparedOf(record).replica;
  const signal = ctx.signal;
  for (const disk of record.disks) {
    disk.stats.blocksTotal = Math.ceil(disk.size / record.blockSize);
    disk.stats.bytesTotal = disk.size;
  }
  const spans = record.disks.map((disk) =>
    startDiskSpan({ runId: record.runId, job: record.job.name }, disk, ctx.traceContext),
  );
  let failure: unknown;
  ctx.progress.start();
  try {
    const exported = await source.exportVm(snapshotOf(record), { signal });
    let moved: { bytesRead: number; bytesWritten: number };
    try {
      moved = await target.importVm(replica, exported, { signal, runId: record.runId });
    } finally {
      await exported.close();
    }
    // The export is one stream: its bytes are counted once, on the first disk, and every disk
    // is whole (its blocks all sent).
    for (const [i, disk] of record.disks.entries()) {
      const blocks = disk.stats.blocksTotal;
      Object.assign(disk.stats, {
        blocksScanned: blocks,
        blocksChanged: blocks,
        bytesScanned: disk.size,
        bytesRead: i === 0 ? moved.bytesRead : 0,
        bytesSent: i === 0 ? moved.bytesRead : 0,
        bytesWritten: i === 0 ? moved.bytesWritten : 0,
      });
      disk.checkpointBlock = blocks;
      disk.done = true;
    }
    sumStats(record);
    await ctx.save();
  } catch (error) {
    failure = error;
    throw error;
  } finally {
    ctx.progress.stop();
    for (const span of spans) span.end(failure);
  }
  ctx.progress.emit(true);
}
