import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createXXHash128, type IHasher } from 'hash-wasm';
import { beforeAll, describe, expect, it } from 'vitest';
import { createHashingPool } from '../src/index.js';
import {
  bindXxh128,
  copyInto,
  createHashMemory,
  createXxh128,
  HASH_MEMORY_RESERVED,
  simdSupported,
  xxh3Module,
} from '../src/xxh3/xxh3.js';

const packageRoot = join(dirname(fileURLToPath(import.meta.url)), '..');

/** Reproducible bytes (xorshift32), so a failing length can be replayed. */
function bytes(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

function random(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

const hex = (digest: Uint8Array) => Buffer.from(digest).toString('hex');

describe('xxh128 on WebAssembly SIMD', () => {
  let reference: IHasher;
  const want = (data: Uint8Array) => {
    reference.init();
    reference.update(data);
    return hex(reference.digest('binary'));
  };

  beforeAll(async () => {
    reference = await createXXHash128();
  });

  it('is the module built from xxh3.wat, and this Node runs it', () => {
    // wabt is deterministic: a stale xxh3-wasm.js (or a hand edit) makes the check exit 1.
    const out = execFileSync(process.execPath, [join(packageRoot, 'scripts', 'build-xxh3.mjs'), '--check'], {
      encoding: 'utf8',
    });
    expect(out).toMatch(/matches xxh3\.wat/);
    expect(simdSupported()).toBe(true);
    expect(xxh3Module()).not.toBeNull();
  });

  it("equals hash-wasm's xxh128 for every length from 0 to 2100 (all of 0..1024, and past two 1 KiB blocks)", () => {
    const xxh = createXxh128();
    const mismatches: number[] = [];
    for (let length = 0; length <= 2100; length++) {
      const data = bytes(length, length + 1);
      if (hex(xxh.digest(data)) !== want(data)) mismatches.push(length);
    }
    expect(mismatches).toEqual([]);
  });

  it('equals hash-wasm for random lengths up to 1 MiB at random offsets and alignments', () => {
    const next = random(42);
    const { memory, view } = createHashMemory(2 * 1024 * 1024 + 64);
    const bound = bindXxh128(memory);
    const xxh = createXxh128();
    const source = bytes(2 * 1024 * 1024 + 64, 7);
    const out = new Uint8Array(48);
    for (let i = 0; i < 120; i++) {
      const length = Math.floor(next() * (1024 * 1024 + 1));
      const offset = Math.floor(next() * 64); // any alignment
      const data = source.subarray(offset, offset + length);
      const expected = want(data);
      // in place, at an odd spot of a hash memory, into an odd spot of `out`
      view.set(data, offset + 3);
      bound.digestInto(view.byteOffset + offset + 3, length, out, 5 + (i % 27));
      expect(hex(out.subarray(5 + (i % 27), 21 + (i % 27))), `in place, length ${length}`).toBe(expected);
      // copied from a subarray that starts at any byte
      expect(hex(xxh.digest(data)), `copied, length ${length}`).toBe(expected);
    }
  });

  it('equals hash-wasm for all-zero and all-0xFF blocks, and for 64 KiB blocks', () => {
    const xxh = createXxh128();
    for (const length of [1, 3, 4, 8, 9, 16, 17, 128, 129, 240, 241, 1024, 1025, 4096, 65535, 65536, 65537]) {
      for (const fill of [0x00, 0xff]) {
        const data = new Uint8Array(length).fill(fill);
        expect(hex(xxh.digest(data)), `length ${length}, fill ${fill}`).toBe(want(data));
      }
    }
    for (let i = 0; i < 64; i++) {
      const data = bytes(65536, 1000 + i);
      expect(hex(xxh.digest(data)), `block ${i}`).toBe(want(data));
    }
  });

  it('checks bounds: nothing outside the memory, nor in its reserved tail, nor past the output', () => {
    const { memory, view } = createHashMemory(4096);
    expect(view.byteOffset).toBe(0); // as the engine expects of allocate()d buffers
    const bound = bindXxh128(memory);
    const out = new Uint8Array(16);
    const end = memory.buffer.byteLength - HASH_MEMORY_RESERVED;
    expect(end).toBeGreaterThanOrEqual(4096);
    expect(() => bound.digestInto(-1, 16, out)).toThrow(RangeError);
    expect(() => bound.digestInto(end - 15, 16, out)).toThrow(RangeError);
    expect(() => bound.digestInto(end, 1, out)).toThrow(RangeError);
    expect(() => bound.digestInto(0, -1, out)).toThrow(RangeError);
    expect(() => bound.digestInto(0, 1.5, out)).toThrow(RangeError);
    expect(() => bound.digestInto(0, 16, out, 1)).toThrow(RangeError);
    expect(() => bindXxh128(memory, 256)).toThrow(RangeError);
    expect(() => createHashMemory(-1)).toThrow(RangeError);
    expect(() => createHashMemory(2 ** 33)).toThrow(RangeError);
    // the last bytes before the tail, and a hash that leaves the secret and the view intact
    view.fill(0);
    bound.digestInto(end - 16, 16, out);
    expect(hex(out)).toBe(want(new Uint8Array(16)));
    bound.digestInto(0, 4096, out);
    expect(hex(out)).toBe(want(new Uint8Array(4096)));
    expect(view.every((byte) => byte === 0)).toBe(true);
  });

  it('copies into shared memory exactly, at any alignment, and only where it fits', () => {
    const { view } = createHashMemory(8192);
    const source = bytes(5000, 99);
    for (const [from, length, to] of [
      [0, 5000, 0],
      [3, 4000, 5],
      [1, 255, 7],
      [2, 256, 4096],
      [0, 0, 8192],
    ] as const) {
      view.fill(0xaa);
      copyInto(view, to, source.subarray(from, from + length));
      expect(Buffer.from(view.subarray(to, to + length)).equals(source.subarray(from, from + length))).toBe(true);
      expect(view.subarray(0, to).every((byte) => byte === 0xaa)).toBe(true);
      expect(view.subarray(to + length).every((byte) => byte === 0xaa)).toBe(true);
    }
    expect(() => copyInto(view, 8192 - 4999, source)).toThrow(RangeError);
    expect(() => copyInto(view, -1, source.subarray(0, 1))).toThrow(RangeError);
  });

  it('gives the pool the same digests as before: hash and hashOrZero, in place and copied', async () => {
    const pool = await createHashingPool({ threads: 2, slotBytes: 512 * 1024 });
    try {
      const count = 40;
      const shared = pool.allocate!(count * 65536 + 4096);
      // the engine's read loop recycles a buffer whose views start at offset 0
      expect(shared.byteOffset).toBe(0);
      expect(shared.buffer).toBeInstanceOf(SharedArrayBuffer);
      const lengths = Array.from({ length: count }, (_, i) => (i % 7 === 6 ? 65536 - 1 - i * 13 : 65536));
      const inPlace: Uint8Array[] = [];
      let at = 100; // blocks at unaligned offsets of the shared buffer
      for (const [i, length] of lengths.entries()) {
        const block = shared.subarray(at, at + length);
        block.set(i % 9 === 4 ? new Uint8Array(length) : bytes(length, i + 1));
        if (i % 9 === 8) block.fill(0xff);
        inPlace.push(block);
        at += length;
      }
      const copied = inPlace.map((block) => block.slice());
      // a SharedArrayBuffer the pool did not allocate: hashed where it is, by the copying path
      const other = new Uint8Array(new SharedArrayBuffer(at + 1));
      const foreign = inPlace.map((block) => {
        const start = block.byteOffset - shared.byteOffset + 1;
        const view = other.subarray(start, start + block.length);
        view.set(block);
        return view;
      });
      const expected = inPlace.map((block) => want(block));
      for (const [name, input] of [
        ['in place', inPlace],
        ['copied', copied],
        ['foreign shared', foreign],
      ] as const) {
        expect((await pool.hash(input)).map(hex), name).toEqual(expected);
        const found = await pool.hashOrZero!(input);
        expect(
          found.map((digest) => (digest ? hex(digest) : null)),
          name,
        ).toEqual(inPlace.map((block, i) => (block.every((byte) => byte === 0) ? null : expected[i])));
      }
      // concurrent batches over both threads
      const halves = await Promise.all([pool.hash(inPlace.slice(0, 20)), pool.hash(copied.slice(20))]);
      expect(halves.flat().map(hex)).toEqual(expected);
      expect(() => pool.allocate!(-1)).toThrow(expect.objectContaining({ code: 'E_INPUT' }));
    } finally {
      await pool.close?.();
    }
  });
});
