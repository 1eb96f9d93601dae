// The target side of a delta: only the changed pages are read and written, the digest (when sent)
// is checked on the whole rebuilt block before anything is written.
import { randomBytes } from 'node:crypto';
import {
  type DiskReader,
  type DiskRef,
  type DiskWriter,
  type Hypervisor,
  type Replica,
  TransportError,
} from '@replikit/core';
import { createNodeHasher } from '@replikit/core/internal';
import { describe, expect, it } from 'vitest';
import { encodeBlockDelta } from '../src/wire/block-delta.js';
import { TargetDisk } from '../src/wire/block-target.js';

const BLOCK = 64 * 1024;
const SIZE = 4 * BLOCK;

function setup() {
  const image = new Uint8Array(randomBytes(SIZE));
  const reads: Array<[number, number]> = [];
  const writes: Array<[number, number]> = [];
  const disk: DiskRef = { id: 'd', vmId: 'r', size: SIZE };
  const reader: DiskReader = {
    size: SIZE,
    blockSize: 4096,
    async *allocated() {
      yield { offset: 0, length: SIZE };
    },
    async read(offset, length) {
      reads.push([offset, length]);
      return image.slice(offset, offset + length);
    },
    async close() {},
  };
  const writer: DiskWriter = {
    size: SIZE,
    async write(offset, data) {
      writes.push([offset, data.length]);
      image.set(data, offset);
    },
    async writeZeroes(offset, length) {
      image.fill(0, offset, offset + length);
    },
    async flush() {},
    async close() {},
  };
  const hypervisor = { openReader: async () => reader } as unknown as Hypervisor;
  const hasher = createNodeHasher('sha256');
  const target = new TargetDisk(hypervisor, {} as Replica, disk, writer, BLOCK, hasher);
  return { image, reads, writes, target, hasher };
}

describe('delta on the target', () => {
  it('writes only the changed ranges, reads nothing, and the block ends up right', async () => {
    const { image, reads, writes, target } = setup();
    const old = image.slice(BLOCK, 2 * BLOCK);
    const block = old.slice();
    block.set(randomBytes(4096), 8192);
    block.set(randomBytes(10), 40000);
    await target.applyDelta({ index: 1, delta: encodeBlockDelta(block, old, BLOCK)! });
    expect(Buffer.from(image.subarray(BLOCK, 2 * BLOCK)).equals(block)).toBe(true);
    expect(writes).toEqual([
      [BLOCK + 8192, 4096],
      [BLOCK + 40000, 64], // ten bytes: their 64-byte chunk
    ]);
    expect(reads).toEqual([]);
    expect(target.bytesWritten).toBe(4096 + 64);
  });

  it('with a digest, checks the whole rebuilt block and writes nothing when it is wrong', async () => {
    const { image, writes, target, hasher } = setup();
    const old = image.slice(0, BLOCK);
    const block = old.slice();
    block.set(randomBytes(4096), 0);
    const delta = encodeBlockDelta(block, old, BLOCK)!;
    const [wrong] = await hasher.hash([old]);
    await expect(target.applyDelta({ index: 0, delta, digest: wrong! })).rejects.toThrow(TransportError);
    expect(writes).toEqual([]);
    const [right] = await hasher.hash([block]);
    await target.applyDelta({ index: 0, delta, digest: right! });
    expect(Buffer.from(image.subarray(0, BLOCK)).equals(block)).toBe(true);
    expect(writes).toEqual([[0, 4096]]);
  });

  it('turns many scattered records into one write, reading the bytes between them', async () => {
    const { image, reads, writes, target } = setup();
    const old = image.slice(2 * BLOCK, 3 * BLOCK);
    const block = old.slice();
    for (let i = 0; i < 20; i++) block[1000 + i * 2000] = block[1000 + i * 2000]! ^ 0xff;
    await target.applyDelta({ index: 2, delta: encodeBlockDelta(block, old, BLOCK)! });
    expect(Buffer.from(image.subarray(2 * BLOCK, 3 * BLOCK)).equals(block)).toBe(true);
    expect(writes).toHaveLength(1);
    expect(reads).toEqual(writes);
  });

  it('refuses a delta for a block outside the disk', async () => {
    const { target } = setup();
    await expect(target.applyDelta({ index: 4, delta: Uint8Array.of(1) })).rejects.toThrow(/outside/);
  });
});
