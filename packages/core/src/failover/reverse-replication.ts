import type { Extent } from '../contracts/disk.js';
import type { Hypervisor, Replica, Snapshot } from '../contracts/hypervisor.js';
import { ConflictError, FailedOverError } from '../errors.js';
import { hookOf, type OperationContext, requireState, withJobLock } from './operation-context.js';

/** Options of reverse replication. */
export interface ReverseOptions {
  /**
   * Copy every block of the promoted replica onto the original even though they share no restore
   * point (without it, that case is refused with `E_FAILED_OVER`, `details.reason: 'no-common-point'`).
   * @default false
   */
  full?: boolean;
}

/** How one disk of a reverse pass chose its blocks and what it sent. Plain data. */
export interface ReverseDiskStats {
  /** Position of the disk in the VM. */
  position: number;
  /**
   * `tracked`: the blocks changed on either side since the common point; `compared`: a side could
   * not tell what changed, so every block of both sides was read and the differing ones sent;
   * `full`: every block (`--full`).
   */
  mode: 'tracked' | 'compared' | 'full';
  /** Blocks written on the promoted replica since its promotion (when it could tell). */
  blocksPromoted?: number;
  /** Blocks written on the original since its last snapshot (when it could tell). */
  blocksOriginal?: number;
  /** Blocks sent onto the original. */
  blocksSent: number;
  /** Bytes sent onto the original. */
  bytesSent: number;
}

/** One pass of reverse replication: the promoted replica's blocks copied onto the original VM. */
export interface ReversePassStats {
  /** Block size of the count (the job's). */
  blockSize: number;
  /** Per disk. */
  disks: ReverseDiskStats[];
  /** Blocks sent in all. */
  blocksSent: number;
  /** Bytes sent in all. */
  bytesSent: number;
}

/** What `FailoverEngine.reverse` reports. */
export interface ReverseResult {
  /** The original's snapshot the replica was promoted from (absent with `full` and no common point). */
  commonSnapshot?: Snapshot;
  /** The pass. */
  reverse: ReversePassStats;
}

/**
 * The common point of the promoted replica and the original VM: the snapshot the job's last
 * completed run left as base, when that run made the point the replica was promoted from and the
 * snapshot is still on the original. Refused (`E_FAILED_OVER`, `details.reason:
 * 'no-common-point'`) otherwise, unless `full`.
 */
export async function findCommonPoint(ctx: OperationContext, full: boolean): Promise<Snapshot | null> {
  const history = await ctx.history();
  const point = ctx.record.point;
  const base = history?.baseSnapshot;
  let why: string | undefined;
  if (!point) why = 'the failover record names no restore point';
  else if (!base) why = 'the job left no base snapshot on the original';
  else if (history?.lastCompletedRunId !== point.label) {
    why = `the replica was promoted from restore point ${point.id} (run ${point.label}), not from the last run ${history?.lastCompletedRunId} whose snapshot the original keeps`;
  } else {
    const source = await ctx.source();
    const vm = await source.getVM(ctx.job.source.vm);
    if (!(await source.listSnapshots(vm.id)).some((s) => s.id === base.id)) {
      why = `the original's snapshot ${base.id} of that run is gone`;
    }
  }
  if (why === undefined) return base ?? null;
  if (full) return null;
  throw new FailedOverError(
    `job '${ctx.job.name}': the promoted replica and the original VM share no restore point (${why}); only a full copy can bring the original back: pass --full`,
    { details: { state: ctx.record.state, reason: 'no-common-point' } },
  );
}

/** Sorted, merged block indexes covering `extents`. */
function blocksOf(extents: readonly Extent[], blockSize: number, into: Set<number>): Set<number> {
  for (const e of extents) {
    if (e.length <= 0) continue;
    const first = Math.floor(e.offset / blockSize);
    const last = Math.floor((e.offset + e.length - 1) / blockSize);
    for (let b = first; b <= last; b++) into.add(b);
  }
  return into;
}

async function collect(iterable: AsyncIterable<Extent> | undefined): Promise<Extent[] | undefined> {
  if (!iterable) return undefined;
  const out: Extent[] = [];
  for await (const e of iterable) out.push(e);
  return out;
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

/** What a pass works on, resolved once. */
interface PassSides {
  source: Hypervisor;
  target: Hypervisor;
  replica: Replica;
  originalId: string;
}

async function sidesOf(ctx: OperationContext): Promise<PassSides> {
  const target = await ctx.target();
  const source = await ctx.source();
  hookOf(target, 'promotedChanges');
  hookOf(target, 'openLiveDisk');
  hookOf(source, 'openLiveDisk');
  const replica = await ctx.replica();
  const original = await source.getVM(ctx.job.source.vm);
  return { source, target, replica, originalId: original.id };
}

/** Copies the chosen blocks of one disk from the promoted replica onto the original. */
async function reverseDisk(
  ctx: OperationContext,
  sides: PassSides,
  position: number,
  base: Snapshot | null,
): Promise<ReverseDiskStats> {
  const { source, target, replica, originalId } = sides;
  const blockSize = ctx.job.blockSize;
  const original = await source.getVM(originalId);
  if (original.powerState !== 'stopped') {
    throw new ConflictError(
      `the original VM '${ctx.job.source.vm}' is ${original.powerState}; reverse replication writes it only while it is stopped: shut it down first`,
      { details: { powerState: original.powerState } },
    );
  }
  const replicaVm = await target.getVM(replica.id);
  const rDisk = replicaVm.disks[position];
  const oDisk = original.disks[position];
  if (!rDisk || !oDisk || rDisk.size !== oDisk.size || replicaVm.disks.length !== original.disks.length) {
    throw new ConflictError(
      `the disks of the promoted replica '${replica.name}' and of the original VM '${ctx.job.source.vm}' differ in number or size; reverse replication needs the same disk set`,
      { details: { position } },
    );
  }
  const size = rDisk.size;
  const totalBlocks = Math.ceil(size / blockSize);
  let mode: ReverseDiskStats['mode'] = 'full';
  let blocks: number[];
  let counts: { blocksPromoted?: number; blocksOriginal?: number } = {};
  if (base === null) {
    blocks = Array.from({ length: totalBlocks }, (_, i) => i);
  } else {
    const promoted = await hookOf(target, 'promotedChanges')(replica, rDisk.id);
    const written = await collect(await source.changeTracker?.pending?.(oDisk, base));
    if (promoted && written) {
      mode = 'tracked';
      const a = blocksOf(promoted, blockSize, new Set());
      const b = blocksOf(written, blockSize, new Set());
      counts = { blocksPromoted: a.size, blocksOriginal: b.size };
      blocks = [...blocksOf(written, blockSize, a)].sort((x, y) => x - y);
    } else {
      mode = 'compared';
      if (promoted) counts.blocksPromoted = blocksOf(promoted, blockSize, new Set()).size;
      if (written) counts.blocksOriginal = blocksOf(written, blockSize, new Set()).size;
      blocks = Array.from({ length: totalBlocks }, (_, i) => i);
    }
  }
  const reader = await hookOf(target, 'openLiveDisk')(replica.id, rDisk.id, 'read');
  let blocksSent = 0;
  let bytesSent = 0;
  try {
    const writer = await hookOf(source, 'openLiveDisk')(originalId, oDisk.id, 'write');
    try {
      for (const block of blocks) {
        const offset = block * blockSize;
        const length = Math.min(blockSize, size - offset);
        const data = await reader.read(offset, length);
        if (mode === 'compared' && equalBytes(data, await writer.read(offset, length))) continue;
        await writer.write(offset, data);
        blocksSent += 1;
        bytesSent += length;
      }
    } finally {
      await writer.close();
    }
  } finally {
    await reader.close();
  }
  return { position, mode, ...counts, blocksSent, bytesSent };
}

/**
 * One reverse pass, journaled per disk (`<name>:disk-<n>`): a crash repeats at most the disk it
 * was copying, which is idempotent (the same bytes again; the original's tracker keeps counting
 * what was written, so nothing is missed).
 */
export async function reversePass(
  ctx: OperationContext,
  name: string,
  base: Snapshot | null,
): Promise<ReversePassStats> {
  const sides = await sidesOf(ctx);
  const count = (await sides.target.getVM(sides.replica.id)).disks.length;
  const disks: ReverseDiskStats[] = [];
  for (let position = 0; position < count; position++) {
    disks.push(await ctx.step(`${name}:disk-${position}`, () => reverseDisk(ctx, sides, position, base)));
  }
  return {
    blockSize: ctx.job.blockSize,
    disks,
    blocksSent: disks.reduce((n, d) => n + d.blocksSent, 0),
    bytesSent: disks.reduce((n, d) => n + d.bytesSent, 0),
  };
}

/**
 * Reverse replication: while the promoted replica runs, its blocks changed since the common point,
 * and the original's blocks changed since that point, are copied from the replica onto the
 * (stopped) original VM. The replica is not changed.
 */
export async function runReverse(ctx: OperationContext, options: ReverseOptions): Promise<ReverseResult> {
  requireState(ctx, ['failed-over', 'committed'], 'replicate back');
  await sidesOf(ctx);
  const base = await ctx.step('common-point', () => findCommonPoint(ctx, options.full === true));
  const reverse = await withJobLock(ctx, () => reversePass(ctx, 'pass', base));
  return { ...(base ? { commonSnapshot: base } : {}), reverse };
}
