import { randomBytes } from 'node:crypto';
import type { DiskWriter } from '@replikit/core';
import { describe, expect, it } from 'vitest';
import { coalesceWrites } from '../src/coalescing-writer.js';
import { ArenaPool, BlockArena } from '../src/protocol/block-arena.js';
import { FrameDecoder } from '../src/protocol/frame-decoder.js';
import { type BlockMessage, encodeMessage, parseFrame } from '../src/protocol/messages.js';
import { WriteLane } from '../src/write-lane.js';

const BLOCK = 4096;

function blockFrame(index: number, data: Uint8Array): Uint8Array[] {
  return encodeMessage({
    type: 'block',
    stream: 1,
    index,
    codec: 0,
    compressed: false,
    rawLength: data.length,
    digest: new Uint8Array(16).fill(index),
    payload: data,
  });
}

describe('block arena and decoder', () => {
  it('reads block data into consecutive slots, in any chunking, and reuses released slots', () => {
    const blocks = Array.from({ length: 12 }, () => randomBytes(BLOCK));
    const wire = Buffer.concat(blocks.flatMap((data, i) => blockFrame(i, data)));
    for (const step of [1, 7, 100, 4096, 5000, wire.length]) {
      const arena = new BlockArena(new Uint8Array(BLOCK * 8), BLOCK);
      const decoder = new FrameDecoder(20 + 64 + BLOCK);
      decoder.useArena(arena);
      const got: BlockMessage[] = [];
      for (let at = 0; at < wire.length; at += step) {
        for (const frame of decoder.push(wire.subarray(at, at + step))) got.push(parseFrame(frame) as BlockMessage);
      }
      expect(got.map((m) => m.index)).toEqual(blocks.map((_, i) => i));
      for (const [i, message] of got.entries()) {
        expect(Buffer.from(message.payload).equals(blocks[i]!)).toBe(true);
        expect(message.digest).toEqual(new Uint8Array(16).fill(i));
      }
      // The first eight blocks filled the arena back to back; the rest were allocated.
      for (let i = 0; i < 8; i++) {
        expect(got[i]!.payload.buffer).toBe(arena.memory.buffer);
        expect(got[i]!.payload.byteOffset).toBe(i * BLOCK);
      }
      expect(got[8]!.payload.buffer).not.toBe(arena.memory.buffer);
      for (const message of got) decoder.release(message.payload);
      expect(arena.take(BLOCK)).toBeDefined();
    }
  });

  it('an arena pool hands an arena back out only after it was given back, with every slot free', () => {
    const pool = new ArenaPool(1);
    const first = pool.take(BLOCK, 4);
    first.take(BLOCK);
    first.take(BLOCK);
    const second = pool.take(BLOCK, 4);
    expect(second).not.toBe(first);
    pool.give(first);
    pool.give(second); // beyond what the pool keeps
    const again = pool.take(BLOCK, 4);
    expect(again).toBe(first);
    expect(Array.from({ length: 4 }, () => again.take(BLOCK)?.byteOffset)).toEqual([0, BLOCK, 2 * BLOCK, 3 * BLOCK]);
    expect(pool.take(BLOCK, 4)).not.toBe(second);
  });

  it('checks a block frame digest length and fixed part before buffering its data', () => {
    const frame = Buffer.concat(blockFrame(3, randomBytes(BLOCK)));
    const damaged = Buffer.from(frame);
    damaged[16 + 5]! ^= 1; // inside the fixed part
    const decoder = new FrameDecoder(20 + 64 + BLOCK);
    expect(() => decoder.push(damaged.subarray(0, 16 + 20 + 16))).toThrow(/arrived damaged/);
  });
});

describe('write lane', () => {
  it('starts writes in order, runs several at once, and settles after all of them', async () => {
    const lane = new WriteLane(3, 1 << 20);
    const started: number[] = [];
    let running = 0;
    let most = 0;
    for (let i = 0; i < 8; i++) {
      lane.add(10, async () => {
        started.push(i);
        running++;
        most = Math.max(most, running);
        for (let turns = 8 - i; turns > 0; turns--) await new Promise((resolve) => setImmediate(resolve));
        running--;
      });
    }
    await lane.settled();
    expect(running).toBe(0);
    expect(started).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(most).toBe(3);
    expect(lane.queued).toBe(0);
  });

  it('starts an operation only once it is ready, and those after it only after it', async () => {
    const lane = new WriteLane(4, 1 << 20);
    const started: number[] = [];
    const first = lane.add(1, async () => void started.push(0), false);
    lane.add(1, async () => void started.push(1));
    await new Promise((resolve) => setImmediate(resolve));
    expect(started).toEqual([]);
    lane.ready(first);
    await lane.settled();
    expect(started).toEqual([0, 1]);
  });

  it('settles for what was queued before, not for what came after', async () => {
    const lane = new WriteLane(4, 1 << 20);
    lane.add(1, async () => undefined);
    const settled = lane.settled();
    const later = lane.add(1, async () => undefined, false);
    await settled;
    expect(later.done).toBe(false);
    lane.ready(later);
    await lane.settled();
    expect(later.done).toBe(true);
  });

  it('asks the reader to wait only when the queue is full', async () => {
    const lane = new WriteLane(1, 10);
    let finish!: () => void;
    const blocked = new Promise<void>((resolve) => {
      finish = resolve;
    });
    lane.add(6, () => blocked);
    expect(lane.full).toBe(false);
    lane.add(6, async () => undefined);
    expect(lane.full).toBe(true);
    const room = lane.room();
    finish();
    await room;
    await lane.settled();
    expect(lane.queued).toBe(0);
  });

  it('starts nothing after a failed check and reports the failure', async () => {
    const lane = new WriteLane(4, 1 << 20);
    const written: number[] = [];
    const failures: unknown[] = [];
    lane.onFail = (error) => failures.push(error);
    lane.add(1, async () => void written.push(0));
    const second = lane.add(1, async () => void written.push(1), false);
    lane.add(1, async () => void written.push(2));
    await new Promise((resolve) => setImmediate(resolve));
    lane.fail(new Error('digest mismatch'));
    lane.ready(second);
    expect(() => lane.add(1, async () => void written.push(3))).toThrow(/digest mismatch/);
    await expect(lane.settled()).rejects.toThrow(/digest mismatch/);
    expect(written).toEqual([0]);
    expect(failures).toHaveLength(1);
  });

  it('fails when a write fails, and idles once what runs has ended', async () => {
    const lane = new WriteLane(2, 1 << 20);
    lane.add(1, async () => {
      throw new Error('disk full');
    });
    await expect(lane.settled()).rejects.toThrow(/disk full/);
    await lane.idle();
  });
});

describe('coalescing writer', () => {
  function recorder() {
    const writes: Array<{ offset: number; length: number }> = [];
    let fail = false;
    const writer: DiskWriter = {
      size: 1 << 30,
      async write(offset, data) {
        await new Promise((resolve) => setImmediate(resolve));
        if (fail) throw new Error('disk full');
        writes.push({ offset, length: data.length });
      },
      writeZeroes: async () => undefined,
      flush: async () => undefined,
      close: async () => undefined,
    };
    return { writer, writes, failNext: () => (fail = true) };
  }

  it('merges writes adjacent on disk and in memory, and resolves each once its bytes are written', async () => {
    const { writer, writes } = recorder();
    const merged = coalesceWrites(writer);
    const memory = new Uint8Array(BLOCK * 8);
    const slot = (i: number) => memory.subarray(i * BLOCK, (i + 1) * BLOCK);
    const done = [
      merged.write(0, slot(0)),
      merged.write(BLOCK, slot(1)),
      merged.write(2 * BLOCK, slot(2)),
      merged.write(10 * BLOCK, slot(3)), // not adjacent on disk
      merged.write(11 * BLOCK, new Uint8Array(BLOCK)), // not adjacent in memory
    ];
    await Promise.all(done);
    expect(writes).toEqual([
      { offset: 0, length: 3 * BLOCK },
      { offset: 10 * BLOCK, length: BLOCK },
      { offset: 11 * BLOCK, length: BLOCK },
    ]);
    await merged.flush();
  });

  it('runs one write at a time, and merges what arrives meanwhile into the next', async () => {
    const { writer, writes } = recorder();
    let running = 0;
    let most = 0;
    let open!: () => void;
    const gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    const counting: DiskWriter = {
      ...writer,
      async write(offset, data) {
        running++;
        most = Math.max(most, running);
        try {
          if (offset === 0) await gate; // the first write takes its time
          await writer.write(offset, data);
        } finally {
          running--;
        }
      },
    };
    const merged = coalesceWrites(counting);
    const memory = new Uint8Array(BLOCK * 8);
    const slot = (i: number) => memory.subarray(i * BLOCK, (i + 1) * BLOCK);
    const first = merged.write(0, slot(0));
    await new Promise((resolve) => setImmediate(resolve)); // the first write starts
    const later = [1, 2, 3].map((i) => merged.write(i * BLOCK, slot(i)));
    await new Promise((resolve) => setImmediate(resolve)); // turns pass while it runs
    later.push(merged.write(4 * BLOCK, slot(4)));
    await new Promise((resolve) => setImmediate(resolve));
    open();
    await Promise.all([first, ...later]);
    await merged.flush();
    expect(most).toBe(1);
    expect(writes).toEqual([
      { offset: 0, length: BLOCK },
      { offset: BLOCK, length: 4 * BLOCK },
    ]);
  });

  it('rejects every write of a failed merged write', async () => {
    const { writer, failNext } = recorder();
    const merged = coalesceWrites(writer);
    const memory = new Uint8Array(BLOCK * 2);
    failNext();
    const results = await Promise.allSettled([
      merged.write(0, memory.subarray(0, BLOCK)),
      merged.write(BLOCK, memory.subarray(BLOCK)),
    ]);
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected']);
  });
});
