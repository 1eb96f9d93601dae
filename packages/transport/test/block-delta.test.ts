import { randomBytes } from 'node:crypto';
import { TransportError } from '@replikit/core';
import { describe, expect, it } from 'vitest';
import { decodeBlockDelta, encodeBlockDelta } from '../src/wire/block-delta.js';

const BLOCK = 64 * 1024;

/** Applies decoded records to a copy of `base` (zeros when undefined), as the target does. */
function apply(base: Uint8Array | undefined, delta: Uint8Array, length = BLOCK): Uint8Array {
  const out = new Uint8Array(length);
  if (base) out.set(base);
  for (const record of decodeBlockDelta(delta, length, 0)) out.set(record.data, record.offset);
  return out;
}

describe('block deltas', () => {
  it('rebuilds the block from its base for changes of every shape', () => {
    const base = randomBytes(BLOCK);
    const shapes: Array<(b: Uint8Array) => void> = [
      (b) => b.set(randomBytes(4096), 8192), // one guest page
      (b) => b.set(randomBytes(512), 100), // a sector inside a page, unaligned
      (b) => {
        b[0] = b[0]! ^ 1;
        b[BLOCK - 1] = b[BLOCK - 1]! ^ 0x80; // first and last byte
      },
      (b) => {
        for (let i = 0; i < BLOCK; i += 37) b[i] = b[i]! ^ 0xff; // scattered bytes in every page
      },
      (b) => b.fill(0, 4096, 20000), // zeros written over data
    ];
    for (const change of shapes) {
      const block = Uint8Array.from(base);
      change(block);
      const delta = encodeBlockDelta(block, base, 2 * BLOCK);
      expect(delta).toBeDefined();
      expect(Buffer.from(apply(base, delta!)).equals(block)).toBe(true);
    }
  });

  it('costs about the changed bytes, not the block', () => {
    const base = randomBytes(BLOCK);
    const block = Uint8Array.from(base);
    block.set(randomBytes(4096), 12288);
    const delta = encodeBlockDelta(block, base, BLOCK >> 1)!;
    expect(delta.length).toBeGreaterThanOrEqual(4096);
    expect(delta.length).toBeLessThan(4096 + 16);
    // A 512-byte sector inside a page costs its 64-byte chunks, not the page.
    const sector = Uint8Array.from(base);
    sector.set(randomBytes(512), 40960 + 128);
    expect(encodeBlockDelta(sector, base, BLOCK >> 1)!.length).toBeLessThan(512 + 16);
    expect(decodeBlockDelta(delta, BLOCK, 0)).toHaveLength(1);
  });

  it('encodes against an all-zero replica block, and an unchanged block as no record', () => {
    const block = new Uint8Array(BLOCK);
    block.set(randomBytes(3000), 40000);
    const delta = encodeBlockDelta(block, undefined, BLOCK)!;
    expect(Buffer.from(apply(undefined, delta)).equals(block)).toBe(true);
    const same = encodeBlockDelta(block, block, BLOCK)!;
    expect(decodeBlockDelta(same, BLOCK, 0)).toEqual([]);
  });

  it('deflates a large, compressible change and gives up past the limit', () => {
    const base = new Uint8Array(BLOCK);
    const block = Buffer.alloc(BLOCK, 'INFO request served in 12ms status=200\n');
    const delta = encodeBlockDelta(block, base, BLOCK >> 1)!;
    expect(delta[0]).toBe(2);
    expect(delta.length).toBeLessThan(BLOCK / 8);
    expect(Buffer.from(apply(base, delta)).equals(block)).toBe(true);
    expect(encodeBlockDelta(randomBytes(BLOCK), base, BLOCK >> 1)).toBeUndefined();
  });

  it('works on a short last block', () => {
    const base = randomBytes(5000);
    const block = Uint8Array.from(base);
    block.set(randomBytes(100), 4990 - 100);
    const delta = encodeBlockDelta(block, base, 5000)!;
    expect(Buffer.from(apply(base, delta, 5000)).equals(block)).toBe(true);
  });

  it('refuses malformed deltas with a TransportError, never reading out of bounds', () => {
    const base = randomBytes(BLOCK);
    const block = Uint8Array.from(base);
    block.set(randomBytes(2000), 30000);
    const good = encodeBlockDelta(block, base, BLOCK)!;
    const bad: Uint8Array[] = [
      new Uint8Array(0),
      Uint8Array.of(9),
      Uint8Array.of(1, 0x80), // truncated varint
      Uint8Array.of(1, 0, 0), // empty record
      Uint8Array.of(1, 0x80, 0x80, 0x04, 1, 7), // a record past the block (gap 65536)
      Uint8Array.of(1, 0, 10, 1, 2), // record past the delta
      Uint8Array.of(1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01), // varint too long
      Uint8Array.of(2, 1, 2, 3), // does not inflate
      good.subarray(0, good.length - 1),
    ];
    for (const delta of bad) expect(() => decodeBlockDelta(delta, BLOCK, 7)).toThrow(TransportError);
    // Random mutations of a valid delta either decode inside the block or throw a TransportError.
    for (let i = 0; i < 2000; i++) {
      const mutated = Uint8Array.from(good);
      for (let k = 0; k < 3; k++)
        mutated[Math.floor(Math.random() * Math.min(mutated.length, 16))] = Math.floor(Math.random() * 256);
      try {
        for (const record of decodeBlockDelta(mutated, BLOCK, 0)) {
          expect(record.offset + record.data.length).toBeLessThanOrEqual(BLOCK);
        }
      } catch (error) {
        expect(error).toBeInstanceOf(TransportError);
      }
    }
  });
});
