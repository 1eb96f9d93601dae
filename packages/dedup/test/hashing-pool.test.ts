import { createHash, randomFillSync } from 'node:crypto';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createBLAKE3, createXXHash128 } from 'hash-wasm';
import { describe, expect, it } from 'vitest';
import { createHashingPool } from '../src/index.js';

/** A digest as hex, or null for a zero block. */
function hex(digest: Uint8Array | null): string | null {
  return digest && Buffer.from(digest).toString('hex');
}

function blocks(count: number, size: number): Uint8Array[] {
  return Array.from({ length: count }, (_, i) => randomFillSync(new Uint8Array(i === count - 1 ? size - 100 : size)));
}

describe('hashing pool', () => {
  it.each(['xxh128', 'sha256', 'blake3'] as const)(
    'gives the same %s digests as a direct hash, in order',
    async (algorithm) => {
      const pool = await createHashingPool({ algorithm, threads: 2, slotBytes: 256 * 1024 });
      try {
        const input = blocks(37, 65536); // several slots' worth, split over both threads
        const digests = await pool.hash(input);
        const reference =
          algorithm === 'sha256' ? undefined : algorithm === 'xxh128' ? await createXXHash128() : await createBLAKE3();
        for (const [i, block] of input.entries()) {
          let want: Uint8Array;
          if (reference) {
            reference.init();
            reference.update(block);
            want = reference.digest('binary');
          } else {
            want = createHash('sha256').update(block).digest();
          }
          expect(Buffer.from(digests[i]!).equals(Buffer.from(want)), `block ${i}`).toBe(true);
        }
        expect(pool.digestLength).toBe(algorithm === 'xxh128' ? 16 : 32);
      } finally {
        await pool.close?.();
      }
    },
  );

  it('hashes concurrent batches on idle workers and stays correct', async () => {
    const pool = await createHashingPool({ threads: 2, slotBytes: 128 * 1024 });
    try {
      const batches = Array.from({ length: 8 }, () => blocks(5, 32768));
      const results = await Promise.all(batches.map((batch) => pool.hash(batch)));
      const direct = await pool.hash(batches.flat());
      expect(results.flat().map((d) => Buffer.from(d).toString('hex'))).toEqual(
        direct.map((d) => Buffer.from(d).toString('hex')),
      );
    } finally {
      await pool.close?.();
    }
  });

  it('finds all-zero blocks on its threads (null) and hashes the others, in place or copied', async () => {
    const pool = await createHashingPool({ threads: 2, slotBytes: 256 * 1024 });
    try {
      const shared = pool.allocate!(8 * 65536);
      randomFillSync(shared);
      shared.fill(0, 65536, 3 * 65536); // blocks 1 and 2 zero
      shared[3 * 65536 + 65535] = 0;
      shared[3 * 65536 + 65534] = 1; // block 3: a single non-zero byte near its end
      shared.fill(0, 3 * 65536, 3 * 65536 + 65534);
      const inPlace = Array.from({ length: 8 }, (_, i) => shared.subarray(i * 65536, (i + 1) * 65536));
      const copied = inPlace.map((block) => block.slice());
      for (const input of [inPlace, copied]) {
        const found = await pool.hashOrZero!(input);
        expect(found.map((d) => d === null)).toEqual([false, true, true, false, false, false, false, false]);
        const digests = await pool.hash(input);
        for (const [i, digest] of found.entries()) {
          if (digest) expect(Buffer.from(digest).equals(Buffer.from(digests[i]!)), `block ${i}`).toBe(true);
        }
      }
    } finally {
      await pool.close?.();
    }
  });

  it('hashes small batches on the calling thread with the same digests and zero checks as its threads', async () => {
    for (const algorithm of ['xxh128', 'sha256'] as const) {
      const pool = await createHashingPool({ algorithm, threads: 2 });
      const blocks = Array.from({ length: 40 }, (_, i) =>
        i % 5 === 0 ? new Uint8Array(65536) : randomFillSync(new Uint8Array(65536)),
      );
      const onThreads = await pool.hashOrZero!(blocks); // 2.5 MiB: on the threads
      const one = await Promise.all(blocks.map((block) => pool.hashOrZero!([block]))); // 64 KiB each: inline
      // Blocks in the pool's own memory (at odd offsets): hashed where they lie, on this thread too.
      const shared = pool.allocate!(41 * 65536);
      const inShared = blocks.map((block, i) => {
        const view = shared.subarray(i * 65536 + 7, (i + 1) * 65536 + 7);
        view.set(block);
        return view;
      });
      const sharedOne = await Promise.all(inShared.map((block) => pool.hashOrZero!([block])));
      for (const [i, digest] of onThreads.entries()) {
        if (i % 5 === 0) {
          expect(one[i]![0]).toBeNull();
          expect(sharedOne[i]![0]).toBeNull();
        } else {
          expect(Buffer.from(one[i]![0]!).equals(digest!)).toBe(true);
          expect(Buffer.from(sharedOne[i]![0]!).equals(digest!)).toBe(true);
        }
      }
      await pool.close?.();
    }
  });

  it.each(['xxh128', 'sha256'] as const)(
    'hashes %s blocks larger than a slot whole (copied, in place and read from a file), zeros included',
    async (algorithm) => {
      // Blocks of 512 KiB through 64 KiB slots: the shape of 16 MiB blocks through the default 4 MiB slots.
      const pool = await createHashingPool({ algorithm, threads: 2, slotBytes: 64 * 1024 });
      const reference = await createHashingPool({ algorithm, threads: 1, slotBytes: 1024 * 1024 });
      const dir = await mkdtemp(join(tmpdir(), 'replikit-pool-large-'));
      try {
        const size = 512 * 1024;
        const data = randomFillSync(new Uint8Array(4 * size));
        data.fill(0, size, 2 * size); // block 1 zero
        data.fill(0, 2 * size, 3 * size - 1); // block 2: one byte at its very end
        const input = [0, 1, 2, 3].map((i) => data.slice(i * size, (i + 1) * size));
        const want = (await reference.hashOrZero!(input)).map(hex);
        expect(want[1]).toBeNull();
        expect(want[2]).not.toBeNull();
        expect((await pool.hashOrZero!(input)).map(hex)).toEqual(want);
        expect((await pool.hash(input)).map(hex)).toEqual((await reference.hash(input)).map(hex));
        const shared = pool.allocate!(data.length);
        shared.set(data);
        expect(
          (await pool.hashOrZero!([0, 1, 2, 3].map((i) => shared.subarray(i * size, (i + 1) * size)))).map(hex),
        ).toEqual(want);
        const path = join(dir, 'disk.raw');
        await writeFile(path, data);
        const file = await open(path, 'r');
        try {
          const target = pool.allocate!(data.length);
          const spans = [{ fd: file.fd, path, position: 0, length: data.length }];
          expect((await pool.readAndHashOrZero!(spans, target, size)).map(hex)).toEqual(want);
          expect(Buffer.from(target).equals(data)).toBe(true);
        } finally {
          await file.close();
        }
      } finally {
        await pool.close?.();
        await reference.close?.();
        await rm(dir, { recursive: true, force: true });
      }
    },
  );

  it('rejects use after close', async () => {
    const pool = await createHashingPool({ threads: 1, slotBytes: 4096 });
    await pool.close?.();
    await expect(pool.hash([new Uint8Array(10)])).rejects.toMatchObject({ code: 'E_INPUT' });
  });
});
