// The pool reading source files itself (a reader's file spans) on its threads, then hashing: the
// same digests and zero flags as reading here and hashing; failures name the file.
import { randomFillSync } from 'node:crypto';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FileSpan } from '@replikit/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHashingPool } from '../src/index.js';

const BLOCK = 65536;
let dir: string;
let a: { path: string; bytes: Uint8Array };
let b: { path: string; bytes: Uint8Array };

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'replikit-pool-reads-'));
  const make = async (name: string, size: number) => {
    const bytes = randomFillSync(new Uint8Array(size));
    bytes.fill(0, 3 * BLOCK, 5 * BLOCK); // two zero blocks
    await writeFile(join(dir, name), bytes);
    return { path: join(dir, name), bytes };
  };
  a = await make('a.raw', 40 * BLOCK);
  b = await make('b.raw', 40 * BLOCK);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** What the spans read, assembled here. */
function expected(parts: Array<[{ bytes: Uint8Array }, number, number]>): Uint8Array {
  const out = new Uint8Array(parts.reduce((sum, [, , length]) => sum + length, 0));
  let at = 0;
  for (const [file, position, length] of parts) {
    out.set(file.bytes.subarray(position, position + length), at);
    at += length;
  }
  return out;
}

function cut(data: Uint8Array): Uint8Array[] {
  const blocks: Uint8Array[] = [];
  for (let at = 0; at < data.length; at += BLOCK) blocks.push(data.subarray(at, at + BLOCK));
  return blocks;
}

describe('hashing pool: reading file spans', () => {
  it.each(['xxh128', 'sha256'] as const)(
    'reads spans of two files into its own buffer on its threads, with the same %s digests as reading here',
    async (algorithm) => {
      const pool = await createHashingPool({ algorithm, threads: 2, slotBytes: 512 * 1024 });
      const fa = await open(a.path, 'r');
      const fb = await open(b.path, 'r');
      try {
        // 24 blocks: more than one slot (so several threads), spans that cross block boundaries.
        const parts: Array<[typeof a, number, number]> = [
          [a, 0, 5 * BLOCK + 100],
          [b, 7 * BLOCK + 100, 10 * BLOCK],
          [a, 20 * BLOCK, 9 * BLOCK - 100],
        ];
        const spans: FileSpan[] = parts.map(([file, position, length]) => ({
          fd: file === a ? fa.fd : fb.fd,
          position,
          length,
          path: file.path,
        }));
        const want = expected(parts);
        const target = pool.allocate!(want.length);
        const digests = await pool.readAndHashOrZero!(spans, target, BLOCK);
        expect(Buffer.from(target).equals(want)).toBe(true);
        expect(digests).toEqual(await pool.hashOrZero!(cut(want)));
        expect(digests[3]).toBeNull(); // a zero block of a.raw
        expect(digests.filter((d) => d === null)).toHaveLength(2);
        // A target outside the pool's memory: read on the calling thread, same result.
        const plain = new Uint8Array(want.length);
        expect(await pool.readAndHashOrZero!(spans, plain, BLOCK)).toEqual(digests);
        expect(Buffer.from(plain).equals(want)).toBe(true);
      } finally {
        await Promise.all([fa.close(), fb.close(), pool.close?.()]);
      }
    },
  );

  it('rejects with E_IO naming the file when it ends before a span, on a thread or here', async () => {
    const pool = await createHashingPool({ threads: 2 });
    const fa = await open(a.path, 'r');
    try {
      // The file is 40 blocks long: the read from block 38 ends 6 blocks short (in a later chunk
      // of a 2-block-slot pool, so the failed piece starts inside the span).
      const small = await createHashingPool({ threads: 2, slotBytes: 2 * BLOCK });
      const spans: FileSpan[] = [{ fd: fa.fd, position: 36 * BLOCK, length: 10 * BLOCK, path: a.path }];
      for (const [hasher, target] of [
        [pool, pool.allocate!(10 * BLOCK)],
        [pool, new Uint8Array(10 * BLOCK)],
        [small, small.allocate!(10 * BLOCK)],
      ] as const) {
        const failed = hasher.readAndHashOrZero!(spans, target, BLOCK);
        await expect(failed).rejects.toMatchObject({ code: 'E_IO' });
        await expect(failed).rejects.toThrow(
          new RegExp(`a\\.raw at \\d+: the file ends at ${40 * BLOCK} bytes.*truncated`),
        );
      }
      await small.close?.();
    } finally {
      await Promise.all([fa.close(), pool.close?.()]);
    }
  });

  it('rejects with E_IO for a descriptor that is not open, and with E_INPUT for spans that do not fit', async () => {
    const pool = await createHashingPool({ threads: 1 });
    try {
      // A number far above any descriptor this process holds (a closed one could be reused meanwhile).
      const spans: FileSpan[] = [{ fd: 1_000_000, position: 0, length: 8 * BLOCK, path: a.path }];
      await expect(pool.readAndHashOrZero!(spans, pool.allocate!(8 * BLOCK), BLOCK)).rejects.toMatchObject({
        code: 'E_IO',
      });
      await expect(pool.readAndHashOrZero!(spans, pool.allocate!(4 * BLOCK), BLOCK)).rejects.toMatchObject({
        code: 'E_INPUT',
      });
      for (const bad of [{ length: 0 }, { fd: -1 }, { position: -4096 }, { position: 0.5 }]) {
        const span = { ...spans[0]!, length: 4 * BLOCK, ...bad };
        await expect(
          pool.readAndHashOrZero!([span], pool.allocate!(span.length), BLOCK),
          JSON.stringify(bad),
        ).rejects.toMatchObject({ code: 'E_INPUT' });
      }
    } finally {
      await pool.close?.();
    }
  });
});
