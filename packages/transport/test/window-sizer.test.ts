import { describe, expect, it } from 'vitest';
import { MIN_ADAPTIVE_WINDOW, WindowSizer } from '../src/window-sizer.js';

const MiB = 1024 * 1024;

/** Acks of `bytes` every `everyMs`, each answering a flush sent `rttMs` before it. */
function feed(sizer: WindowSizer, acks: number, bytes: number, everyMs: number, rttMs: number): void {
  for (let i = 1; i <= acks; i++) {
    const at = i * everyMs + rttMs;
    sizer.flushSent(at - rttMs);
    sizer.acked(at, bytes);
  }
}

describe('window sizer', () => {
  it('starts at 4 MiB and grows to 4 × bandwidth × round trip on a long fat link, up to its cap', () => {
    const sizer = new WindowSizer(256 * MiB);
    expect(sizer.limit).toBe(MIN_ADAPTIVE_WINDOW);
    // 125 MB/s acked (1 Gbit/s) with a 150 ms round trip: a 18.75 MB product.
    feed(sizer, 10, 12_500_000, 100, 150);
    expect(sizer.rttMs).toBe(150);
    expect(sizer.limit).toBe(4 * 18_750_000);
    const capped = new WindowSizer(32 * MiB);
    feed(capped, 10, 12_500_000, 100, 150);
    expect(capped.limit).toBe(32 * MiB);
  });

  it('stays at its floor on a short link, and takes the smallest round trip (queueing left out)', () => {
    const sizer = new WindowSizer(32 * MiB);
    feed(sizer, 10, 1 * MiB, 10, 0.5);
    expect(sizer.limit).toBe(MIN_ADAPTIVE_WINDOW);
    sizer.flushSent(10_000);
    sizer.acked(10_900, MiB);
    expect(sizer.rttMs).toBe(0.5);
  });

  it('keeps the window at its cap when not adaptive, and never above a cap under 4 MiB', () => {
    const constant = new WindowSizer(32 * MiB, false);
    feed(constant, 10, 1 * MiB, 10, 0.5);
    expect(constant.limit).toBe(32 * MiB);
    expect(new WindowSizer(MiB).limit).toBe(MiB);
  });
});
