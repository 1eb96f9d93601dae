import { randomFillSync } from 'node:crypto';
import { describe, expect, it, vi } from 'vitest';

// Counts the worker threads the pool starts, by wrapping the real Worker class.
const started = vi.hoisted(() => ({ count: 0 }));
vi.mock('node:worker_threads', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:worker_threads')>();
  class CountedWorker extends real.Worker {
    constructor(...args: ConstructorParameters<typeof real.Worker>) {
      super(...args);
      started.count++;
    }
  }
  return { ...real, Worker: CountedWorker };
});

const { createHashingPool } = await import('../src/index.js');

describe('hashing pool threads', () => {
  it.each(['xxh128', 'sha256'] as const)(
    'starts no %s thread for small batches, and its threads when a large one comes (same digests)',
    async (algorithm) => {
      started.count = 0;
      const pool = await createHashingPool({ algorithm, threads: 2 });
      try {
        const few = Array.from({ length: 3 }, (_, i) =>
          i === 1 ? new Uint8Array(65536) : randomFillSync(new Uint8Array(65536)),
        );
        const inline = await pool.hashOrZero!(few);
        const inlineAgain = await pool.hash(few);
        expect(started.count).toBe(0);
        expect(inline[1]).toBeNull();

        // 2.5 MiB in one batch: hashed on the threads, which start now.
        const many = [...few, ...Array.from({ length: 37 }, () => randomFillSync(new Uint8Array(65536)))];
        const onThreads = await pool.hashOrZero!(many);
        expect(started.count).toBe(2);
        for (const i of [0, 2]) {
          expect(Buffer.from(onThreads[i]!).equals(Buffer.from(inline[i]!))).toBe(true);
          expect(Buffer.from(inlineAgain[i]!).equals(Buffer.from(inline[i]!))).toBe(true);
        }
        expect(onThreads[1]).toBeNull();
        await pool.hash(many); // the threads are reused, never started twice
        expect(started.count).toBe(2);
      } finally {
        await pool.close?.();
      }
    },
  );

  it('closes a pool whose threads never started, and rejects use afterwards', async () => {
    started.count = 0;
    const pool = await createHashingPool({ threads: 2 });
    await pool.close?.();
    expect(started.count).toBe(0);
    await expect(pool.hash([new Uint8Array(10)])).rejects.toMatchObject({ code: 'E_INPUT' });
  });
});
