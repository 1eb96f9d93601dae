import type { DiskReader } from '../contracts/disk.js';
import { throwIfAborted } from '../errors.js';
import type { BlockHasher } from './block-hasher.js';
import { sameDigest } from './block-hasher.js';
import type { BlockRange } from './block-ranges.js';
import type { DiskRecord } from './run-record.js';
import { readSegments } from './segment-reader.js';
import type { BackupTap } from './transfer/backup-tap.js';
import type { BlockSender } from './transfer/block-sender.js';
import type { DeltaStep } from './transfer/delta-step.js';
import type { DigestRecorder } from './transfer/digest-recorder.js';
import type { ReplicaDigests, SegmentDigests } from './transfer/replica-digests.js';
import { type PreparedSegment, segmentPreparer } from './transfer/segment-prepare.js';

/**
 * The steps of one disk's transfer, each present only when the run uses it (built once, at the
 * boundary, by `transferSteps`): compare ─► delta ─► (throttle) ─► record in the cache ─►
 * record in the backup store ─► send.
 */
export interface DiskTransferOptions {
  /** The disk's journal entry: its checkpoint, flags and counters are updated in place. */
  record: DiskRecord;
  /** Reads the source snapshot disk. */
  reader: DiskReader;
  /** The blocks to read from the source (allocated or tracked), from the checkpoint on. */
  ranges: readonly BlockRange[];
  /** Also examine the blocks outside `ranges` (they read as zero on the source). */
  examineAll: boolean;
  /** Compare: the replica's digests; without it every examined block is sent. */
  compare?: ReplicaDigests;
  /** Delta: changed blocks as differences from the replica's block. */
  delta?: DeltaStep;
  /** Record in the cache: every block's digest, for a new replication cache. */
  recorder?: DigestRecorder;
  /** Record in the backup store: the blocks of a single-pass backup version. */
  backup?: BackupTap;
  /** Throttle and send. */
  sender: BlockSender;
  /** Every block is hashed for the wire (the target checks it). */
  digestOnWire: boolean;
  /** How the source is read (see `readSegments`). */
  reading: {
    readAhead: number;
    readBytes?: number;
    /** Read buffers to reuse (the channel releases data on send). */
    buffers?: Uint8Array[];
    /** Hand segments unread to the hasher, which reads the source's files on its threads. */
    readOnHashers: boolean;
    /** Read and hash the delta base's blocks with each segment (tracked blocks). */
    prefetchBase?: DiskReader;
    /** Read buffers paired with buffers for the delta base's bytes of the same segment. */
    pairedBase?: ReadonlyMap<ArrayBufferLike, Uint8Array>;
  };
  blockSize: number;
  hasher: BlockHasher;
  signal?: AbortSignal;
  /**
   * Stop at the next segment's end: the disk's progress is made durable and journaled there
   * (a checkpoint), then `stopped()`'s error is thrown.
   */
  suspend?: AbortSignal;
  /** The error thrown once the disk stopped at its checkpoint. */
  stopped?(): Error;
  /** Make progress durable at least this often. */
  checkpointEveryMs: number;
  /** Makes side records (new cache, backup) durable up to a block, before each checkpoint is journaled. */
  beforeCheckpoint?(blockCount: number): Promise<void>;
  /** Called after each durable checkpoint, to journal it. */
  onCheckpoint(record: DiskRecord): Promise<void>;
  /** Called after each segment, to report progress. */
  onProgress(record: DiskRecord): void;
}

/**
 * Moves one disk: source reader ─► zero check / hash ─► its steps, in block order, from the
 * record's checkpoint to the end. Reading and hashing run ahead of sending inside a bounded
 * window. Everything below `record.checkpointBlock` is durable on the replica each time
 * `onCheckpoint` is called, so an interrupted transfer resumes there.
 */
export async function transferDisk(options: DiskTransferOptions): Promise<void> {
  const { record, reader, blockSize, hasher, signal, compare, recorder, backup, sender } = options;
  const stats = record.stats;
  const blockCount = Math.ceil(record.size / blockSize);
  const skipZeroWrites = record.targetKnownZero && !compare;
  const needDigests = compare !== undefined || options.digestOnWire || recorder !== undefined;
  const reading = options.reading;
  const prepare = segmentPreparer({
    reader,
    hasher,
    blockSize,
    stats,
    needDigests,
    readOnHashers: reading.readOnHashers,
    ...(reading.prefetchBase ? { prefetchBase: reading.prefetchBase } : {}),
    ...(reading.pairedBase ? { pairedBase: reading.pairedBase } : {}),
    ...(signal ? { signal } : {}),
  });

  /** The blocks of a segment read from the source: compared, then sent, recorded or skipped. */
  const dataSegment = async (segment: PreparedSegment, theirsOf: SegmentDigests | undefined) => {
    const { first, digests: mine } = segment;
    const blocks = segment.blocks!;
    const zero = segment.zero!;
    stats.bytesRead += segment.data!.length;
    await recorder?.segment(first, mine, zero);
    for (let i = 0; i < blocks.length; i++) {
      const index = first + i;
      const theirs = theirsOf ? await theirsOf(i) : undefined;
      if (zero[i]) {
        if (compare ? theirs !== null : !skipZeroWrites) {
          await sender.zero(index);
          await backup?.zero(index);
        }
        continue;
      }
      const block = blocks[i]!;
      const digest = mine?.[i];
      if (theirs && digest && sameDigest(digest, theirs)) {
        await backup?.unchanged(index, block);
        continue;
      }
      const before = segment.base;
      const prefetched = before ? { block: before.blocks[i]!, digest: before.digests[i]! } : undefined;
      const base =
        options.delta && theirs !== undefined
          ? await options.delta.baseOf(index, block, theirs, prefetched)
          : undefined;
      if (base !== undefined) await sender.delta(index, block, base, digest);
      else await sender.data(index, block, digest);
      await backup?.sent(index, block);
    }
  };

  /** A hole of the source (zeros): zeroed on the replica where it is not already. */
  const hole = async (first: number, count: number, theirsOf: SegmentDigests | undefined) => {
    if (theirsOf) {
      for (let i = 0; i < count; i++) {
        if ((await theirsOf(i)) !== null) {
          await sender.zero(first + i);
          await backup?.zero(first + i);
        }
      }
    } else if (!skipZeroWrites) {
      // A new cache records the gap as zeros by itself.
      await sender.zero(first, count);
      await backup?.zero(first, count);
    }
  };

  let lastCheckpoint = performance.now();
  const checkpoint = async (cursor: number, done = false) => {
    await sender.checkpoint();
    await options.beforeCheckpoint?.(cursor);
    record.checkpointBlock = cursor;
    record.done = done;
    sender.syncCounters();
    lastCheckpoint = performance.now();
    await options.onCheckpoint(record);
  };

  try {
    for await (const segment of readSegments(
      reader,
      options.ranges,
      {
        blockSize,
        blockCount,
        fromBlock: record.checkpointBlock,
        examineAll: options.examineAll,
        readAhead: reading.readAhead,
        signal,
        ...(reading.readBytes ? { readBytes: reading.readBytes } : {}),
        ...(reading.buffers ? { buffers: reading.buffers, leaveUnread: reading.readOnHashers } : {}),
      },
      prepare,
    )) {
      throwIfAborted(signal);
      const { first, count } = segment;
      await compare?.carryTo(first, first + count);
      const theirsOf = compare ? await compare.segment(first, count) : undefined;
      if (segment.blocks) await dataSegment(segment, theirsOf);
      else {
        // A hole walked from a stream records its zeros block by block, as the stream is walked.
        if (theirsOf && recorder && compare?.walksBlocks)
          for (let i = 0; i < count; i++) await recorder.block(first + i, null);
        await hole(first, count, theirsOf);
      }
      stats.blocksScanned += count;
      stats.bytesScanned += Math.min(count * blockSize, record.size - first * blockSize);
      sender.syncCounters();
      options.onProgress(record);
      if (options.suspend?.aborted) {
        // Everything up to here is sent: journaled (as a periodic checkpoint would), it is never
        // sent again when the run resumes.
        await checkpoint(first + count);
        throw options.stopped?.() ?? new Error('the transfer was stopped');
      }
      if (performance.now() - lastCheckpoint >= options.checkpointEveryMs) await checkpoint(first + count);
    }
    await compare?.carryTo(blockCount);
    await checkpoint(blockCount, true);
  } finally {
    await sender.settle(); // after a failure: let pending sends settle first
    await compare?.close();
  }
}
