import { randomFillSync } from 'node:crypto';
import { describe, expect, it, vi } from 'vitest';

// Counts the sha256 digests made on this thread (the pool's threads load their own node:crypto).
const here = vi.hoisted(() => ({ sha256: 0 }));
vi.mock('node:crypto', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:crypto')>();
  return {
    ...real,
    createHash: (algorithm: string, ...rest: unknown[]) => {
      if (algorithm === 'sha256') here.sha256++;
      return (real.createHash as (...args: unknown[]) => ReturnType<typeof real.createHash>)(algorithm, ...rest);
    },
  };
});

const { ChunkAddresser } = await import('../src/block-store/chunk-addresser.js');
const { createHash } = await import('node:crypto');

describe('chunk addresser', () => {
  it("hashes a restore's batches on the pool's threads from the first batch, even in a loop that never yields to the event loop", async () => {
    const addresser = await ChunkAddresser.open(null);
    try {
      const batch = Array.from({ length: 64 }, () => randomFillSync(new Uint8Array(65536)));
      here.sha256 = 0;
      const results: Uint8Array[][] = [];
      // Like a restore's loop: only awaits of promises, no timer or I/O callback in between.
      for (let i = 0; i < 4; i++) results.push(await addresser.addressesOf(batch));
      expect(here.sha256).toBe(0);
      for (const addresses of results) {
        for (const [i, block] of batch.entries()) {
          expect(Buffer.from(addresses[i]!).equals(createHash('sha256').update(block).digest())).toBe(true);
        }
      }
    } finally {
      await addresser.close();
    }
  });
});
