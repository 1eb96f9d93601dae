import type { DiskReader, OperationOptions } from '../contracts/disk.js';
import { throwIfAborted } from '../errors.js';
import type { BlockRange } from './block-ranges.js';

/**
 * A run of consecutive blocks of the source disk: with `data` (read from the disk, `count`
 * blocks, the last possibly short) or without (known to read as zero, never read).
 */
export interface Segment {
  /** First block index. */
  first: number;
  /** Number of blocks. */
  count: number;
  /** The blocks' bytes, when they were read. */
  data?: Uint8Array;
  /** Set when `data` is a buffer of the right length that was left unread (`leaveUnread`): the transform fills it. */
  unread?: true;
}

/** Options of {@link readSegments}. */
export interface SegmentReaderOptions extends OperationOptions {
  blockSize: number;
  /** Number of blocks of the disk. */
  blockCount: number;
  /** First block to yield. */
  fromBlock: number;
  /** Yield the blocks outside `ranges` too, as segments without data. */
  examineAll: boolean;
  /**
   * Bytes per read, rounded down to whole blocks; a read is never less than one block, however
   * large the block (see {@link segmentBytes}).
   * @default 1 MiB
   */
  readBytes?: number;
  /** Reads kept in flight ahead of the consumer. @default 4 */
  readAhead?: number;
  /**
   * Reuse these buffers (at least `readAhead + 2`, each {@link segmentBytes} long) through the
   * reader's `readInto`: a segment's data is then valid only until the consumer asks for the next
   * one. A buffer too short for a segment is not used: that segment is read into new memory.
   */
  buffers?: Uint8Array[];
  /**
   * With `buffers`: do not read, hand the transform each segment's buffer unread (`unread` set),
   * for a transform that reads and hashes the bytes itself (on a pool's threads).
   */
  leaveUnread?: boolean;
}

/**
 * The bytes of one read of whole blocks: `readBytes` rounded down to a multiple of `blockSize`,
 * and at least one block. A block larger than the read size is still read whole: a short read
 * would cut it (and a zero check of the part read would take a changed block for zeros).
 */
export function segmentBytes(readBytes: number, blockSize: number): number {
  return Math.max(1, Math.floor(readBytes / blockSize)) * blockSize;
}

/** Work done on each segment as soon as it is read, inside the read-ahead window (hashing). */
export type SegmentTransform<T extends Segment> = (segment: Segment) => Promise<T>;

/**
 * Walks a disk in block order, reading the blocks of `ranges` in requests of `readBytes` with
 * `readAhead` requests in flight, each followed by `transform` (hashing, say), so the disk and the
 * hashing threads work while the consumer sends. Memory is bounded by `readBytes × (readAhead + 1)`.
 */
export async function* readSegments<T extends Segment = Segment>(
  reader: DiskReader,
  ranges: readonly BlockRange[],
  options: SegmentReaderOptions,
  transform?: SegmentTransform<T>,
): AsyncIterable<T> {
  const { blockSize, blockCount, fromBlock, examineAll, signal } = options;
  const blocksPerRead = segmentBytes(options.readBytes ?? 1024 * 1024, blockSize) / blockSize;
  const readAhead = Math.max(1, options.readAhead ?? 4);

  const holeMax = blocksPerRead * 256;
  function* holes(first: number, end: number): Generator<Segment> {
    for (let at = first; at < end; at += holeMax) yield { first: at, count: Math.min(holeMax, end - at) };
  }

  // The plan, as a lazy list of segments without data; reads are attached in order below.
  function* layout(): Generator<Segment> {
    let cursor = fromBlock;
    for (const range of ranges) {
      const start = Math.max(range.start, cursor);
      if (start >= range.end) continue;
      if (examineAll && start > cursor) yield* holes(cursor, start);
      for (let first = start; first < range.end; first += blocksPerRead) {
        yield { first, count: Math.min(blocksPerRead, range.end - first), data: new Uint8Array(0) };
      }
      cursor = range.end;
    }
    if (examineAll) yield* holes(cursor, blockCount);
  }

  const free = options.buffers && (reader.readInto || options.leaveUnread) ? [...options.buffers] : undefined;
  const read = async (segment: Segment): Promise<T> => {
    let done = segment;
    if (segment.data) {
      const offset = segment.first * blockSize;
      const length = Math.min(segment.count * blockSize, reader.size - offset);
      let buffer = free?.pop();
      if (buffer && buffer.length < length) {
        // Never a partial read of a block: a buffer too short stays free, the segment gets its own.
        free!.push(buffer);
        buffer = undefined;
      }
      if (buffer && options.leaveUnread) {
        done = { ...segment, data: buffer.subarray(0, length), unread: true };
      } else if (buffer) {
        const view = buffer.subarray(0, length);
        await reader.readInto!(offset, view, { signal });
        done = { ...segment, data: view };
      } else {
        done = { ...segment, data: await reader.read(offset, length, { signal }) };
      }
    }
    return transform ? transform(done) : (done as T);
  };
  // The pool's buffers start at offset 0 of their ArrayBuffer: a view goes back as the whole buffer.
  const release = (segment: Segment) => {
    if (free && segment.data && segment.data.byteOffset === 0) {
      const owner = options.buffers!.find((b) => b.buffer === segment.data!.buffer);
      if (owner) free.push(owner);
    }
  };

  const queue: Array<Promise<T>> = [];
  const plan = layout();
  const fill = () => {
    while (queue.length < readAhead) {
      const next = plan.next();
      if (next.done) return;
      const promise = read(next.value);
      promise.catch(() => undefined); // handled when awaited; avoids an unhandled rejection meanwhile
      queue.push(promise);
    }
  };
  try {
    fill();
    while (queue.length > 0) {
      throwIfAborted(signal);
      const segment = await queue.shift()!;
      fill();
      yield segment;
      // The consumer asked for the next segment: it is done with this one's buffer.
      release(segment);
    }
  } finally {
    await Promise.allSettled(queue);
  }
}
