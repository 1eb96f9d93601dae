import { randomBytes } from 'node:crypto';
import { type BlockHasher, createNodeHasher } from '@replikit/core';
import { describe, expect, it } from 'vitest';
import { HashBatcher } from '../src/hash-batcher.js';

describe('HashBatcher', () => {
  it('hashes the blocks asked for in one turn in one call, each caller getting its own digest', async () => {
    const node = createNodeHasher('sha256');
    const calls: number[] = [];
    const counting: BlockHasher = {
      ...node,
      hash: (blocks) => {
        calls.push(blocks.length);
        return node.hash(blocks);
      },
    };
    const batcher = new HashBatcher(counting, 4);
    const blocks = Array.from({ length: 10 }, () => randomBytes(1000));
    const digests = await Promise.all(blocks.map((block) => batcher.hash(block)));
    const want = await node.hash(blocks);
    expect(digests.map((d) => Buffer.from(d).toString('hex'))).toEqual(want.map((d) => Buffer.from(d).toString('hex')));
    expect(calls).toEqual([4, 4, 2]);
  });

  it('holds a small batch while data keeps arriving, and sends it in the first turn without any', async () => {
    const node = createNodeHasher('sha256');
    const calls: number[] = [];
    const counting: BlockHasher = {
      ...node,
      hash: (blocks) => {
        calls.push(blocks.length);
        return node.hash(blocks);
      },
    };
    let bytesIn = 0;
    const batcher = new HashBatcher(counting, { maxBlocks: 8, minBlocks: 4, activity: () => bytesIn });
    const turn = () => new Promise((resolve) => setImmediate(resolve));
    const digests: Array<Uint8Array | undefined> = [];
    let allDone!: () => void;
    const done = new Promise<void>((resolve) => {
      allDone = resolve;
    });
    const submit = () =>
      batcher.submit(randomBytes(100), (digest) => {
        digests.push(digest);
        if (digests.length === 5) allDone();
      });
    submit();
    submit();
    for (let i = 0; i < 3; i++) {
      bytesIn += 1000; // data keeps arriving: two blocks are not a batch yet
      await turn();
    }
    expect(calls).toEqual([]);
    submit();
    submit();
    bytesIn += 1000;
    await turn(); // four blocks: they leave
    expect(calls).toEqual([4]);
    submit();
    await turn(); // a turn with no new bytes sends what waits: a pause never holds blocks back
    await turn();
    expect(calls).toEqual([4, 1]);
    await done;
    expect(digests.filter(Boolean)).toHaveLength(5);
  });

  it('passes a failure of the hasher to every block of the batch', async () => {
    const failing: BlockHasher = {
      algorithm: 'x',
      digestLength: 1,
      hash: async () => Promise.reject(new Error('boom')),
    };
    const batcher = new HashBatcher(failing);
    const results = await Promise.allSettled([batcher.hash(new Uint8Array(1)), batcher.hash(new Uint8Array(1))]);
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected']);
  });
});
