import { describe, expect, it } from 'vitest';
import { RestoreBatches } from '../src/block-store/restore-batches.js';

describe('restore batches', () => {
  it('keeps every chunk of a batch in its one buffer: raw ones in place, others copied, and never overwrites one', () => {
    const batches = new RestoreBatches(1000, 1, () => new Uint8Array(new SharedArrayBuffer(1000)));
    const batch = batches.take();
    // A raw chunk: its record is read into the room given, its bytes are a view of it.
    const room = batch.room(300, 256)!;
    room.fill(7);
    batch.add(0, 'a', room.subarray(44, 300));
    // An inflated chunk: bytes of its own, copied into the buffer after the first.
    const room2 = batch.room(100, 256)!;
    room2.fill(9); // its record, overwritten by the copy
    batch.add(1, 'b', new Uint8Array(256).fill(1));
    expect(batch.chunks.map((c) => c.plain.buffer)).toEqual([room.buffer, room.buffer]);
    expect(batch.chunks[0]!.plain.every((b) => b === 7)).toBe(true);
    expect(batch.chunks[1]!.plain.every((b) => b === 1)).toBe(true);
    expect(batch.bytes).toBe(512);
    // No room left for a record and its block: none given; a chunk that does not fit is kept as it is.
    expect(batch.room(200, 500)).toBeUndefined();
    const outside = new Uint8Array(600).fill(3);
    batch.add(2, 'c', outside);
    expect(batch.chunks[2]!.plain).toBe(outside);
    expect(batch.chunks[0]!.plain.every((b) => b === 7)).toBe(true);
    batches.release(batch);
    expect(batches.take()).toBe(batch);
    expect(batch.chunks).toEqual([]);
  });
});
