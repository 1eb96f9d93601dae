import type { Extent, OperationOptions } from '../contracts/disk.js';
import { throwIfAborted } from '../errors.js';

/** A half-open range of block indexes `[start, end)`. */
export interface BlockRange {
  start: number;
  end: number;
}

/**
 * Turns byte extents (from `DiskReader.allocated()` or a change tracker, in any order) into
 * sorted, merged block ranges clipped to `[fromBlock, blockCount)`. Ranges closer than `mergeGap`
 * blocks are merged: reading a few unallocated blocks costs less than another request, and it
 * bounds the number of ranges held in memory.
 */
export async function toBlockRanges(
  extents: AsyncIterable<Extent>,
  blockSize: number,
  blockCount: number,
  fromBlock: number,
  options: OperationOptions & { mergeGap?: number } = {},
): Promise<BlockRange[]> {
  const mergeGap = options.mergeGap ?? 16;
  const raw: BlockRange[] = [];
  let count = 0;
  for await (const extent of extents) {
    if ((++count & 0xfff) === 0) throwIfAborted(options.signal);
    if (!(extent.length > 0)) continue;
    const start = Math.max(fromBlock, Math.floor(extent.offset / blockSize));
    const end = Math.min(blockCount, Math.ceil((extent.offset + extent.length) / blockSize));
    if (start < end) raw.push({ start, end });
  }
  raw.sort((a, b) => a.start - b.start);
  const ranges: BlockRange[] = [];
  for (const range of raw) {
    const last = ranges[ranges.length - 1];
    if (last && range.start <= last.end + mergeGap) last.end = Math.max(last.end, range.end);
    else ranges.push({ ...range });
  }
  return ranges;
}

/** Number of blocks the ranges cover. */
export function countBlocks(ranges: readonly BlockRange[]): number {
  let total = 0;
  for (const range of ranges) total += range.end - range.start;
  return total;
}

/** Bytes of a disk of `size` bytes that the ranges cover (the last block may be short). */
export function countBytes(ranges: readonly BlockRange[], blockSize: number, size: number): number {
  let total = 0;
  for (const range of ranges) total += Math.min(range.end * blockSize, size) - range.start * blockSize;
  return total;
}
