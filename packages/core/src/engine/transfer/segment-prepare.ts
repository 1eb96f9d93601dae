import type { DiskReader } from '../../contracts/disk.js';
import { type BlockHasher, isZeroBlock } from '../block-hasher.js';
import type { TransferStats } from '../run-record.js';
import type { Segment } from '../segment-reader.js';

/** A segment read and prepared: split in blocks, zero blocks found, the others hashed. */
export interface PreparedSegment extends Segment {
  blocks?: Uint8Array[];
  zero?: boolean[];
  /** Digest of each non-zero block (undefined for zero blocks, or when nothing needs digests). */
  digests?: Array<Uint8Array | undefined>;
  /** The delta base's blocks at the same indexes, and their digests (`null`: zeros), when prefetched. */
  base?: { blocks: Uint8Array[]; digests: Array<Uint8Array | null> };
}

/** What {@link segmentPreparer} needs. */
export interface PrepareOptions {
  reader: DiskReader;
  hasher: BlockHasher;
  blockSize: number;
  stats: TransferStats;
  /** Every block is hashed (to compare, to put on the wire, or to record). */
  needDigests: boolean;
  /** Segments arrive unread (`leaveUnread`): the hasher reads the source's files on its threads. */
  readOnHashers: boolean;
  /** The delta base, read and hashed with each segment (tracked blocks, nearly all changed). */
  prefetchBase?: DiskReader;
  /** Read buffers, each paired with a buffer of the base's bytes of the same segment. */
  pairedBase?: ReadonlyMap<ArrayBufferLike, Uint8Array>;
  signal?: AbortSignal;
}

/**
 * The transform run on each segment inside the read-ahead window: split in blocks, find zero
 * blocks and hash the others (on the hasher's threads when it can, or reading the source's files
 * there), and read and hash the delta base's blocks alongside when asked.
 */
export function segmentPreparer(o: PrepareOptions): (segment: Segment) => Promise<PreparedSegment> {
  const { hasher, blockSize, signal } = o;
  const prepareOwn = async (segment: Segment): Promise<PreparedSegment> => {
    const data = segment.data!;
    const blocks = splitBlocks(data, blockSize);
    if (!o.needDigests) return { ...segment, blocks, zero: blocks.map(isZeroBlock) };
    const found =
      segment.unread && o.readOnHashers
        ? await hasher.readAndHashOrZero!(
            o.reader.fileSpans!(segment.first * blockSize, data.length),
            data,
            blockSize,
            {
              signal,
            },
          )
        : await digestsOrZero(hasher, blocks);
    return { ...segment, blocks, zero: found.map((d) => d === null), digests: found.map((d) => d ?? undefined) };
  };
  const prepareBase = async (segment: Segment, base: DiskReader): Promise<PreparedSegment['base']> => {
    const length = segment.data!.length;
    const offset = segment.first * blockSize;
    const paired = segment.data!.byteOffset === 0 ? o.pairedBase?.get(segment.data!.buffer) : undefined;
    let data: Uint8Array;
    if (paired) {
      data = paired.subarray(0, length);
      await base.readInto!(offset, data, { signal });
    } else data = await base.read(offset, length, { signal });
    o.stats.bytesRead += data.length;
    const blocks = splitBlocks(data, blockSize);
    return { blocks, digests: await digestsOrZero(hasher, blocks) };
  };
  return async (segment) => {
    if (!segment.data) return segment;
    const base = o.prefetchBase;
    if (!base) return prepareOwn(segment);
    const [prepared, baseBlocks] = await Promise.all([prepareOwn(segment), prepareBase(segment, base)]);
    return { ...prepared, base: baseBlocks };
  };
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
