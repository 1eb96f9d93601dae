import { describe, expect, it } from 'vitest';
import { VerifiedChunks } from '../src/block-store/verified-chunks.js';

describe('verified chunks', () => {
  it('keeps a copy of a checked chunk only once it was met again, within its budget, oldest out first', () => {
    const kept = new VerifiedChunks(400);
    const block = (fill: number) => new Uint8Array(100).fill(fill);
    expect(kept.get('a')).toBeUndefined(); // met once
    kept.remember('a', block(1));
    expect(kept.get('a')).toBeUndefined(); // met again: kept when next checked
    const a = block(1);
    kept.remember('a', a);
    a.fill(9); // the caller's buffer is reused: the kept copy is not
    expect(kept.get('a')).toEqual(block(1));
    for (const [address, fill] of [
      ['b', 2],
      ['c', 3],
      ['d', 4],
      ['e', 5],
    ] as const) {
      kept.get(address);
      kept.get(address);
      kept.remember(address, block(fill));
    }
    expect(kept.get('a')).toBeUndefined(); // the oldest, dropped for 'e'
    expect(kept.get('e')).toEqual(block(5));
    kept.remember('z', block(7)); // never met: not kept
    expect(kept.get('z')).toBeUndefined();
  });
});
