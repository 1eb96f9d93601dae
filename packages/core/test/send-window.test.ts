import { describe, expect, it } from 'vitest';
import { createNodeHasher } from '../src/engine/block-hasher.js';
import { coalescingHasher } from '../src/engine/coalescing-hasher.js';
import { SendWindow } from '../src/engine/send-window.js';

const tick = () => new Promise((resolve) => setImmediate(resolve));

describe('send window', () => {
  it('keeps at most `limit` sends pending and drains them all', async () => {
    const window = new SendWindow(3);
    let pending = 0;
    let most = 0;
    let done = 0;
    for (let i = 0; i < 20; i++) {
      await window.start(async () => {
        pending++;
        most = Math.max(most, pending);
        await tick();
        pending--;
        done++;
      });
    }
    await window.drain();
    expect(most).toBe(3);
    expect(done).toBe(20);
  });

  it('throws a failed send at the next start or drain, and starts nothing after it', async () => {
    const window = new SendWindow(4);
    await window.start(async () => {
      await tick();
      throw new Error('disk full');
    });
    await tick();
    await tick();
    let started = false;
    await expect(
      window.start(async () => {
        started = true;
      }),
    ).rejects.toThrow('disk full');
    expect(started).toBe(false);
    await expect(window.drain()).rejects.toThrow('disk full');
  });

  it('with limit 1 runs each send to completion', async () => {
    const window = new SendWindow(1);
    let finished = false;
    await window.start(async () => {
      await tick();
      finished = true;
    });
    expect(finished).toBe(true);
  });
});

describe('coalescing hasher', () => {
  it('merges the calls of one turn into one batch and gives each caller its own digests', async () => {
    const inner = createNodeHasher('sha256');
    const batches: number[] = [];
    const counting = {
      ...inner,
      async hash(blocks: readonly Uint8Array[]) {
        batches.push(blocks.length);
        return inner.hash(blocks);
      },
    };
    const hasher = coalescingHasher(counting);
    const blocks = Array.from({ length: 10 }, (_, i) => new Uint8Array(100).fill(i + 1));
    const results = await Promise.all(blocks.map((block) => hasher.hash([block])));
    const direct = await inner.hash(blocks);
    expect(results.map((r) => Buffer.from(r[0]!).toString('hex'))).toEqual(
      direct.map((d) => Buffer.from(d).toString('hex')),
    );
    expect(batches).toEqual([10]);
  });

  it('passes a failure to every caller of the batch', async () => {
    const failing = {
      algorithm: 'x',
      digestLength: 16,
      async hash(): Promise<Uint8Array[]> {
        throw new Error('thread died');
      },
    };
    const hasher = coalescingHasher(failing);
    const calls = [hasher.hash([new Uint8Array(4)]), hasher.hash([new Uint8Array(4)])];
    for (const call of calls) await expect(call).rejects.toThrow('thread died');
  });
});
