import { describe, expect, it } from 'vitest';
import type { DiskReader } from '../src/contracts/disk.js';
import { isZeroBlock } from '../src/engine/block-hasher.js';
import { readSegments, segmentBytes } from '../src/engine/segment-reader.js';

const MiB = 1024 * 1024;

/** A reader over bytes in memory, with `readInto`. */
function memoryReader(bytes: Uint8Array): DiskReader {
  return {
    size: bytes.length,
    blockSize: 4096,
    async *allocated() {
      yield { offset: 0, length: bytes.length };
    },
    async read(offset, length) {
      return bytes.slice(offset, offset + length);
    },
    async readInto(offset, target) {
      target.set(bytes.subarray(offset, offset + target.length));
    },
    async close() {},
  };
}

describe('segment reader: blocks larger than the read size', () => {
  it('reads whole blocks: at least one per read, the last one short', () => {
    expect(segmentBytes(MiB, 4 * MiB)).toBe(4 * MiB);
    expect(segmentBytes(4 * MiB, 16 * MiB)).toBe(16 * MiB);
    expect(segmentBytes(MiB, 64 * 1024)).toBe(MiB);
    expect(segmentBytes(MiB, 3 * 65536)).toBe(5 * 3 * 65536);
  });

  it('never cuts a 4 MiB block to the length of a 1 MiB buffer', async () => {
    const disk = new Uint8Array(2 * 4 * MiB + 12345);
    disk[4 * MiB + MiB + 7] = 1; // block 1: its first MiB is zero
    disk[disk.length - 1] = 2; // the short last block
    const buffers = Array.from({ length: 6 }, () => new Uint8Array(MiB));
    const seen: Array<{ first: number; length: number; zero: boolean }> = [];
    for await (const segment of readSegments(memoryReader(disk), [{ start: 0, end: 3 }], {
      blockSize: 4 * MiB,
      blockCount: 3,
      fromBlock: 0,
      examineAll: false,
      readBytes: MiB,
      buffers,
    })) {
      seen.push({ first: segment.first, length: segment.data!.length, zero: isZeroBlock(segment.data!) });
    }
    expect(seen).toEqual([
      { first: 0, length: 4 * MiB, zero: true },
      { first: 1, length: 4 * MiB, zero: false },
      { first: 2, length: 12345, zero: false },
    ]);
  });

  it('finds a non-zero byte anywhere in a 16 MiB block', () => {
    const block = new Uint8Array(16 * MiB);
    expect(isZeroBlock(block)).toBe(true);
    block[16 * MiB - 1] = 1;
    expect(isZeroBlock(block)).toBe(false);
  });
});
