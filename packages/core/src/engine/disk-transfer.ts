import type { DiskReader } from '../contracts/disk.js';
import type { BlockDigest, DiskChannel } from '../contracts/transport.js';
import { TransportError, throwIfAborted } from '../errors.js';
import type { TokenBucket } from '../util/token-bucket.js';
import type { BlockHasher } from './block-hasher.js';
import { isZeroBlock, sameDigest } from './block-hasher.js';
import type { BlockRange } from './block-ranges.js';
import type { DiskRecord } from './run-record.js';
import { readSegments, type Segment } from './segment-reader.js';
import { SendWindow } from './send-window.js';

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
  /**
   * The replica's digests from the checkpoint on, to send only the blocks that differ: the target's
   * own (verified diff) or a trusted replication cache's. Without it every examined block is sent.
   */
  replicaDigests?: AsyncIterable<BlockDigest>;
  /**
   * With `replicaDigests` and tracked `ranges`: the blocks outside `ranges` did not change since
   * the replica's digests were recorded (a change tracker says so). They are not read; their
   * digests are carried over to `recordDigest` as they are.
   */
  unchangedOutsideRanges?: boolean;
  /**
   * With `unchangedOutsideRanges`, instead of walking `replicaDigests`: the replica's digest of one
   * block, read at random (a cache's `digestAt`)…
   */
  replicaDigestAt?(index: number): Promise<Uint8Array | null>;
  /** …and a bulk copy of the digests of the unchanged blocks `[from, to)` into the new record. */
  carryDigests?(from: number, to: number): Promise<void>;
  /**
   * With `replicaDigests` and without `unchangedOutsideRanges`: copies the replica's digests of
   * blocks `[from, from + count)` into `target` back to back (all zero bytes: a zero block), to
   * compare a segment per call instead of walking `replicaDigests` a block per call (a cache's
   * `copyEntries`).
   */
  replicaDigestsInto?(target: Uint8Array, from: number, count: number): Promise<void>;
  /** Instead of `recordDigest`: records a data segment's digests at once, in the same form. */
  recordDigestEntries?(from: number, entries: Uint8Array): Promise<void>;
  /** Attach each data block's digest so the target can check it. */
  digestOnWire: boolean;
  /** Receives the digest of every block of the source from the checkpoint on (`null`: zeros), for a new cache. */
  recordDigest?(index: number, digest: Uint8Array | null): Promise<void>;
  /**
   * Records the blocks of a single-pass backup version: the bytes of every block sent (`null` for
   * zeros), and with `backupHasBase` false, of every non-zero block examined.
   */
  backupPut?(index: number, data: Uint8Array | null): Promise<void>;
  /** The backup version inherits the blocks it is not given from the previous version. */
  backupHasBase?: boolean;
  /** Makes side records (new cache, backup) durable up to a block, before each checkpoint is journaled. */
  beforeCheckpoint?(blockCount: number): Promise<void>;
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
  /** Bytes per read (the length of `buffers`). @default 1 MiB */
  readBytes?: number;
  /** Read buffers to reuse (used only when the channel releases data on send). */
  buffers?: Uint8Array[];
  /**
   * One more buffer per read buffer (same length), for the delta base's bytes of the same
   * segment: they live exactly as long as the segment's own.
   */
  baseBuffers?: Uint8Array[];
  /**
   * The previous snapshot of the source disk. When a changed block's previous content has the
   * replica's digest, the replica holds it: the block is then handed to the channel's `sendDelta`
   * with it, to travel as a difference (only channels that take deltas use it). Or a function
   * that opens it (undefined: it cannot serve), called when the first changed block needs it: a
   * scan that finds nothing changed never opens it. The caller closes it.
   */
  deltaBase?: DiskReader | (() => Promise<DiskReader | undefined>);
  /**
   * Read and hash the `deltaBase` blocks of each segment along with the segment, inside the
   * read-ahead window: for tracked ranges, where nearly every block read has changed. Needs
   * `deltaBase` as an open reader.
   */
  prefetchDeltaBase?: boolean;
}

/** A segment read and prepared: split in blocks, zero blocks found, the others hashed. */
interface PreparedSegment extends Segment {
  blocks?: Uint8Array[];
  zero?: boolean[];
  /** Digest of each non-zero block (undefined for zero blocks, or when nothing needs digests). */
  digests?: Array<Uint8Array | undefined>;
  /** The delta base's blocks at the same indexes, and their digests (`null`: zeros), when prefetched. */
  base?: { blocks: Uint8Array[]; digests: Array<Uint8Array | null> };
}

/**
 * Moves one disk: source reader ─► zero check / hash / compare ─► (throttle) ─► channel, in
 * block order, from the record's checkpoint to the end. Reading and hashing run ahead of sending
 * inside a bounded window. Everything below `record.checkpointBlock` is durable on the replica
 * each time `onCheckpoint` is called, so an interrupted transfer resumes there.
 */
export async function transferDisk(options: DiskTransferOptions): Promise<void> {
  const { record, reader, channel, blockSize, hasher, throttle, signal } = options;
  const stats = record.stats;
  const blockCount = Math.ceil(record.size / blockSize);
  const from = record.checkpointBlock;
  const sentBefore = stats.bytesSent;
  const writtenBefore = stats.bytesWritten;
  const checkpointEveryMs = options.checkpointEveryMs ?? 1000;
  const randomAccess =
    options.unchangedOutsideRanges === true &&
    options.replicaDigestAt !== undefined &&
    options.carryDigests !== undefined;
  const comparing = options.replicaDigests !== undefined || randomAccess;
  const skipZeroWrites = record.targetKnownZero && !comparing;
  const needDigests = comparing || options.digestOnWire || options.recordDigest !== undefined;
  const record_ = options.recordDigest;
  const put = options.backupPut;
  const putAll = put !== undefined && !options.backupHasBase;
  const putZero = async (index: number, count = 1) => {
    if (put && !putAll) for (let i = 0; i < count; i++) await put(index + i, null);
  };

  const digests: AsyncIterator<BlockDigest> | undefined = randomAccess
    ? undefined
    : options.replicaDigests?.[Symbol.asyncIterator]();
  const carrying = comparing && options.unchangedOutsideRanges === true;
  let digestCursor = from;
  /** Carries the replica's digests of the unchanged blocks below `end` into the new record. */
  const carryUnchanged = async (end: number) => {
    if (!carrying) return;
    if (randomAccess) {
      if (end > digestCursor) await options.carryDigests!(digestCursor, end);
      digestCursor = Math.max(digestCursor, end);
      return;
    }
    for (; digestCursor < end; digestCursor++) {
      const theirs = await nextDigest(digestCursor);
      await record_?.(digestCursor, theirs);
    }
  };
  const nextDigest = async (index: number): Promise<Uint8Array | null> => {
    if (randomAccess) return options.replicaDigestAt!(index);
    const next = await digests!.next();
    if (next.done || next.value.index !== index) {
      throw new TransportError(
        `the replica's digest of block ${next.done ? 'none' : next.value.index} came where block ${index} was expected`,
      );
    }
    if (record.digestSource !== 'cache') stats.bytesReadReplica += Math.min(blockSize, record.size - index * blockSize);
    return next.value.digest;
  };

  // A segment's digests in bulk (a cache that copies entries): compared and recorded per segment.
  const digestLength = hasher.digestLength;
  const readEntries = comparing && !carrying ? options.replicaDigestsInto : undefined;
  const recordEntries = options.recordDigestEntries;
  let theirEntries: Uint8Array = new Uint8Array(0);
  let myEntries: Uint8Array = new Uint8Array(0);
  const entriesOf = async (first: number, count: number) => {
    theirEntries = atLeast(theirEntries, count * digestLength);
    const entries = theirEntries.subarray(0, count * digestLength);
    await readEntries!(entries, first, count);
    if (record.digestSource !== 'cache')
      stats.bytesReadReplica += Math.min(count * blockSize, record.size - first * blockSize);
    return entries;
  };
  const givenBase = options.deltaBase;
  const prefetch =
    givenBase && typeof givenBase !== 'function' && channel.sendDelta && options.prefetchDeltaBase
      ? givenBase
      : undefined;
  let openedBase: Promise<DiskReader | undefined> | undefined;
  const deltaBase = () => {
    openedBase ??= typeof givenBase === 'function' ? givenBase() : Promise.resolve(givenBase);
    return openedBase;
  };
  const reuse = options.buffers !== undefined && channel.releasesDataOnSend === true;
  const pairedBase = new Map<ArrayBufferLike, Uint8Array>();
  if (reuse && options.baseBuffers && prefetch?.readInto) {
    options.buffers!.forEach((buffer, i) => {
      const base = options.baseBuffers![i];
      if (base && base.length >= buffer.length) pairedBase.set(buffer.buffer, base);
    });
  }
  const prepareBase = async (segment: Segment): Promise<PreparedSegment['base']> => {
    const length = segment.data!.length;
    const offset = segment.first * blockSize;
    const paired = segment.data!.byteOffset === 0 ? pairedBase.get(segment.data!.buffer) : undefined;
    let data: Uint8Array;
    if (paired) {
      data = paired.subarray(0, length);
      await prefetch!.readInto!(offset, data, { signal });
    } else data = await prefetch!.read(offset, length, { signal });
    stats.bytesRead += data.length;
    const blocks = splitBlocks(data, blockSize);
    return { blocks, digests: await digestsOrZero(hasher, blocks) };
  };
  // The hasher reads the source's files itself, on its threads, when both sides allow it and
  // every block is hashed anyway: then reading runs on every core, not only on this thread.
  const readAndHash =
    reuse && needDigests && !prefetch && reader.fileSpans !== undefined && hasher.readAndHashOrZero !== undefined;
  const prepareOwn = async (segment: Segment): Promise<PreparedSegment> => {
    const data = segment.data!;
    const blocks = splitBlocks(data, blockSize);
    if (!needDigests) return { ...segment, blocks, zero: blocks.map(isZeroBlock) };
    const found = segment.unread
      ? await hasher.readAndHashOrZero!(reader.fileSpans!(segment.first * blockSize, data.length), data, blockSize, {
          signal,
        })
      : await digestsOrZero(hasher, blocks);
    return { ...segment, blocks, zero: found.map((d) => d === null), digests: found.map((d) => d ?? undefined) };
  };
  const prepare = async (segment: Segment): Promise<PreparedSegment> => {
    if (!segment.data) return segment;
    if (!prefetch) return prepareOwn(segment);
    const [prepared, base] = await Promise.all([prepareOwn(segment), prepareBase(segment)]);
    return { ...prepared, base };
  };

  // Zero runs own their bytes: several may be pending at once when the channel allows. Data ops
  // and deltas are awaited, as their bytes may live in a read buffer that is reused.
  const sends = new SendWindow(channel.maxPendingSends ?? 1);
  let zeroRun: { index: number; count: number } | undefined;
  const flushZero = async () => {
    if (!zeroRun) return;
    const run = zeroRun;
    zeroRun = undefined;
    await sends.start(() => channel.send({ kind: 'zero', index: run.index, count: run.count }, { signal }));
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
    await sends.drain();
    await channel.send(
      { kind: 'data', index, data, ...(digest && options.digestOnWire ? { digest } : {}) },
      { signal },
    );
    stats.blocksChanged++;
  };
  const deltaChannel = options.deltaBase && channel.sendDelta ? channel : undefined;
  /**
   * The replica's current block for a delta (`null`: all zeros), or undefined when the source
   * cannot know it (the previous snapshot's block does not have the replica's digest).
   */
  const deltaBaseOf = async (
    index: number,
    block: Uint8Array,
    theirs: Uint8Array | null,
    prefetched?: { block: Uint8Array; digest: Uint8Array | null },
  ): Promise<Uint8Array | null | undefined> => {
    if (theirs === null) return null; // the replica's block is all zeros
    let base = prefetched?.block;
    let digest = prefetched?.digest;
    if (!base) {
      const baseReader = await deltaBase();
      if (!baseReader) return undefined;
      base = await baseReader.read(index * blockSize, block.length, { signal });
      stats.bytesRead += base.length;
      [digest] = await hasher.hash([base]);
    }
    if (!digest || !sameDigest(digest, theirs)) return undefined; // the replica does not hold it
    return base;
  };
  const syncCounters = () => {
    stats.bytesSent = sentBefore + channel.bytesSent;
    stats.bytesWritten = writtenBefore + channel.bytesWritten;
  };
  let lastCheckpoint = performance.now();
  const checkpoint = async (cursor: number, done = false) => {
    await flushZero();
    await sends.drain();
    await channel.checkpoint({ signal });
    await options.beforeCheckpoint?.(cursor);
    record.checkpointBlock = cursor;
    record.done = done;
    syncCounters();
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
        fromBlock: from,
        examineAll: options.examineAll,
        readAhead: options.readAhead ?? 4,
        signal,
        ...(options.readBytes ? { readBytes: options.readBytes } : {}),
        ...(reuse ? { buffers: options.buffers, leaveUnread: readAndHash } : {}),
      },
      prepare,
    )) {
      throwIfAborted(signal);
      const { first, count } = segment;
      await carryUnchanged(first);
      digestCursor = first + count;
      const theirsAll = readEntries ? await entriesOf(first, count) : undefined;
      if (segment.blocks) {
        stats.bytesRead += segment.data!.length;
        const { blocks, zero, digests: mine } = segment;
        let entries: Uint8Array | undefined;
        if (recordEntries) {
          myEntries = atLeast(myEntries, count * digestLength);
          entries = myEntries.subarray(0, count * digestLength);
          entries.fill(0);
        }
        for (let i = 0; i < blocks.length; i++) {
          const index = first + i;
          const theirs = theirsAll
            ? entryAt(theirsAll, i, digestLength)
            : comparing
              ? await nextDigest(index)
              : undefined;
          const digest = mine?.[i];
          if (entries) {
            if (!zero![i]) entries.set(digest!, i * digestLength);
          } else await record_?.(index, zero![i] ? null : digest!);
          if (zero![i]) {
            if (comparing ? theirs !== null : !skipZeroWrites) {
              await sendZero(index);
              await putZero(index);
            }
            continue;
          }
          if (theirs && digest && sameDigest(digest, theirs)) {
            if (putAll) await put!(index, blocks[i]!);
            continue;
          }
          const prefetched = segment.base
            ? { block: segment.base.blocks[i]!, digest: segment.base.digests[i]! }
            : undefined;
          const base =
            deltaChannel && theirs !== undefined ? await deltaBaseOf(index, blocks[i]!, theirs, prefetched) : undefined;
          if (base !== undefined) {
            // The channel encodes the difference (or sends the block whole when it does not pay);
            // like a data op it may hold the block's and the base's buffers until it resolves.
            await flushZero();
            await sends.drain();
            const op = { index, block: blocks[i]!, base, ...(digest && options.digestOnWire ? { digest } : {}) };
            const sent = await deltaChannel!.sendDelta!(op, { signal });
            await throttle?.take(sent.bytes, signal);
            stats.blocksChanged++;
            if (sent.delta) stats.blocksDelta++;
          } else {
            await sendData(index, blocks[i]!, digest);
          }
          await put?.(index, blocks[i]!);
        }
        if (entries) await recordEntries!(first, entries);
      } else if (theirsAll) {
        // A hole: nothing to record (a cache writer records the blocks it skips as zeros).
        for (let i = 0; i < count; i++) {
          if (entryAt(theirsAll, i, digestLength) !== null) {
            await sendZero(first + i);
            await putZero(first + i);
          }
        }
      } else if (comparing) {
        for (let i = 0; i < count; i++) {
          const index = first + i;
          await record_?.(index, null);
          if ((await nextDigest(index)) !== null) {
            await sendZero(index);
            await putZero(index);
          }
        }
      } else if (!skipZeroWrites) {
        // A hole: zeros on the source. (A new cache records the gap as zeros by itself.)
        await sendZero(first, count);
        await putZero(first, count);
      }
      stats.blocksScanned += count;
      stats.bytesScanned += Math.min(count * blockSize, record.size - first * blockSize);
      syncCounters();
      options.onProgress(record);
      if (performance.now() - lastCheckpoint >= checkpointEveryMs) await checkpoint(first + count);
    }
    await carryUnchanged(blockCount);
    await checkpoint(blockCount, true);
  } finally {
    await sends.drain().catch(() => undefined); // after a failure: let pending sends settle first
    await digests?.return?.();
  }
}

/** Views of `data` cut into blocks (the last one possibly short). */
function splitBlocks(data: Uint8Array, blockSize: number): Uint8Array[] {
  const blocks: Uint8Array[] = [];
  for (let at = 0; at < data.length; at += blockSize) blocks.push(data.subarray(at, at + blockSize));
  return blocks;
}

/** The digest of each block, `null` for an all-zero one: on the hasher's threads when it can, in one batch. */
async function digestsOrZero(hasher: BlockHasher, blocks: Uint8Array[]): Promise<Array<Uint8Array | null>> {
  if (hasher.hashOrZero) return hasher.hashOrZero(blocks);
  const zero = blocks.map(isZeroBlock);
  const hashed = await hasher.hash(blocks.filter((_, i) => !zero[i]));
  let next = 0;
  return zero.map((z) => (z ? null : hashed[next++]!));
}

/** Entry `i` of back-to-back digests (a view), or `null` when it is all zero bytes (a zero block). */
function entryAt(entries: Uint8Array, i: number, digestLength: number): Uint8Array | null {
  const start = i * digestLength;
  for (let at = start; at < start + digestLength; at++) {
    if (entries[at] !== 0) return entries.subarray(start, start + digestLength);
  }
  return null;
}

/** `buffer` when it holds at least `bytes`, else a new one that does (scratch space reused per segment). */
function atLeast(buffer: Uint8Array, bytes: number): Uint8Array {
  return buffer.length >= bytes ? buffer : new Uint8Array(bytes);
}
