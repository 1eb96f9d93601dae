import type { DiskReader } from '../contracts/disk.js';
import type { BlockDigest, DiskChannel } from '../contracts/transport.js';
import { TransportError, throwIfAborted } from '../errors.js';
import type { TokenBucket } from '../util/token-bucket.js';
import type { BlockHasher } from './block-hasher.js';
import { isZeroBlock, sameDigest } from './block-hasher.js';
import type { BlockRange } from './block-ranges.js';
import type { DiskRecord } from './run-record.js';
import { readSegments } from './segment-reader.js';

/** Options of {@link transferDisk}. */
export interface DiskTransferOptions {
  /** The disk's journal entry: its checkpoint, flags and counters are updated in place. */
  record: DiskRecord;
  /** Reads the source snapshot disk. */
  reader: DiskReader;
  /** Carries operations to the replica disk. */
  channel: DiskChannel;
  /** The blocks to read from the source (allocated or tracked), from the checkpoint on. */
  ranges: readonly BlockRange[];
  /** Also examine the blocks outside `ranges` (they read as zero on the source). */
  examineAll: boolean;
  /** Compare every examined block with the replica's digest and send only the differing ones. */
  compareWithReplica: boolean;
  /** Attach each data block's digest so the target can check it. */
  digestOnWire: boolean;
  blockSize: number;
  hasher: BlockHasher;
  /** Caps the bytes sent per second. */
  throttle?: TokenBucket;
  signal?: AbortSignal;
  /** Make progress durable at least this often. @default 1000 */
  checkpointEveryMs?: number;
  /** Called after each durable checkpoint, to journal it. */
  onCheckpoint(record: DiskRecord): Promise<void>;
  /** Called after each segment, to report progress. */
  onProgress(record: DiskRecord): void;
  /** Reads kept in flight. @default 4 */
  readAhead?: number;
}

/**
 * Moves one disk: source reader ─► zero check / hash / compare ─► (throttle) ─► channel, in
 * block order, from the record's checkpoint to the end. Everything below
 * `record.checkpointBlock` is durable on the replica each time `onCheckpoint` is called, so an
 * interrupted transfer resumes there.
 */
export async function transferDisk(options: DiskTransferOptions): Promise<void> {
  const { record, reader, channel, blockSize, hasher, throttle, signal } = options;
  const stats = record.stats;
  const blockCount = Math.ceil(record.size / blockSize);
  const from = record.checkpointBlock;
  const sentBefore = stats.bytesSent;
  const writtenBefore = stats.bytesWritten;
  const checkpointEveryMs = options.checkpointEveryMs ?? 1000;
  const skipZeroWrites = record.targetKnownZero && !options.compareWithReplica;

  const digests: AsyncIterator<BlockDigest> | undefined = options.compareWithReplica
    ? channel.replicaDigests(from, { signal })[Symbol.asyncIterator]()
    : undefined;
  const nextDigest = async (index: number): Promise<Uint8Array | null> => {
    const next = await digests!.next();
    if (next.done || next.value.index !== index) {
      throw new TransportError(
        `the target sent the digest of block ${next.done ? 'none' : next.value.index} where block ${index} was expected`,
      );
    }
    stats.bytesReadReplica += Math.min(blockSize, record.size - index * blockSize);
    return next.value.digest;
  };

  let zeroRun: { index: number; count: number } | undefined;
  const flushZero = async () => {
    if (!zeroRun) return;
    const run = zeroRun;
    zeroRun = undefined;
    await channel.send({ kind: 'zero', index: run.index, count: run.count }, { signal });
    stats.blocksZero += run.count;
  };
  const sendZero = async (index: number, count = 1) => {
    if (zeroRun && zeroRun.index + zeroRun.count === index) {
      zeroRun.count += count;
      return;
    }
    await flushZero();
    zeroRun = { index, count };
  };
  const sendData = async (index: number, data: Uint8Array, digest: Uint8Array | undefined) => {
    await flushZero();
    await throttle?.take(data.length, signal);
    await channel.send({ kind: 'data', index, data, ...(digest ? { digest } : {}) }, { signal });
    stats.blocksChanged++;
  };
  const syncCounters = () => {
    stats.bytesSent = sentBefore + channel.bytesSent;
    stats.bytesWritten = writtenBefore + channel.bytesWritten;
  };
  let lastCheckpoint = performance.now();
  const checkpoint = async (cursor: number, done = false) => {
    await flushZero();
    await channel.checkpoint({ signal });
    record.checkpointBlock = cursor;
    record.done = done;
    syncCounters();
    lastCheckpoint = performance.now();
    await options.onCheckpoint(record);
  };

  try {
    for await (const segment of readSegments(reader, options.ranges, {
      blockSize,
      blockCount,
      fromBlock: from,
      examineAll: options.examineAll,
      readAhead: options.readAhead ?? 4,
      signal,
    })) {
      throwIfAborted(signal);
      const { first, count, data } = segment;
      if (data) {
        stats.bytesRead += data.length;
        const blocks: Uint8Array[] = [];
        for (let at = 0; at < data.length; at += blockSize) blocks.push(data.subarray(at, at + blockSize));
        const zero = blocks.map(isZeroBlock);
        const theirs: Array<Uint8Array | null> = [];
        if (digests) for (let i = 0; i < blocks.length; i++) theirs.push(await nextDigest(first + i));
        // Hash what needs a digest: blocks to compare, and blocks whose digest travels.
        const toHash = blocks.filter((_, i) => !zero[i] && ((digests && theirs[i] !== null) || options.digestOnWire));
        const hashes = toHash.length ? await hasher.hash(toHash) : [];
        let h = 0;
        for (let i = 0; i < blocks.length; i++) {
          const index = first + i;
          if (zero[i]) {
            if (digests ? theirs[i] !== null : !skipZeroWrites) await sendZero(index);
            continue;
          }
          const needsHash = (digests && theirs[i] !== null) || options.digestOnWire;
          const mine = needsHash ? hashes[h++] : undefined;
          if (digests && theirs[i] !== null && mine && sameDigest(mine, theirs[i]!)) continue;
          await sendData(index, blocks[i]!, options.digestOnWire ? mine : undefined);
        }
      } else if (digests) {
        for (let i = 0; i < count; i++) {
          if ((await nextDigest(first + i)) !== null) await sendZero(first + i);
        }
      } else if (!skipZeroWrites) {
        await sendZero(first, count);
      }
      stats.blocksScanned += count;
      stats.bytesScanned += Math.min(count * blockSize, record.size - first * blockSize);
      syncCounters();
      options.onProgress(record);
      if (performance.now() - lastCheckpoint >= checkpointEveryMs) await checkpoint(first + count);
    }
    await checkpoint(blockCount, true);
  } finally {
    await digests?.return?.();
  }
}
