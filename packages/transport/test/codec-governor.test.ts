import { describe, expect, it } from 'vitest';
import { CodecGovernor, decideCompression } from '../src/codec-governor.js';

const MiB = 1024 * 1024;
/** zstd level 1 on half-compressible blocks: ~450 MB per CPU-second, ratio ~0.56. */
const ZSTD = { bytesPerMs: 450_000, ratio: 0.56 };
/** deflate level 1: ~95 MB per CPU-second. */
const DEFLATE = { bytesPerMs: 95_000, ratio: 0.56 };

describe('decideCompression (the auto codec, measurements injected)', () => {
  it('starts compressing on a slow link: 4 MiB took 335 ms at 100 Mbit/s, 300 of them waiting', () => {
    const window = { rawBytes: 4 * MiB, elapsedMs: 335, linkWaitMs: 300, compressMs: 0.3 };
    expect(decideCompression(false, window, ZSTD)).toBe(true);
    expect(decideCompression(false, window, DEFLATE)).toBe(true);
  });

  it('stays off on loopback: the link drains faster than the compressor could fill it', () => {
    // 4 MiB in 6 ms, 3 of them waiting for the socket: compressing would take 9 ms (zstd).
    const window = { rawBytes: 4 * MiB, elapsedMs: 6, linkWaitMs: 3, compressMs: 0.1 };
    expect(decideCompression(false, window, ZSTD)).toBe(false);
  });

  it('stays off when the sender never waits for the link (the CPU or the disk limits the run)', () => {
    const window = { rawBytes: 4 * MiB, elapsedMs: 400, linkWaitMs: 0, compressMs: 0.3 };
    expect(decideCompression(false, window, ZSTD)).toBe(false);
  });

  it('stays off for data that does not compress, however slow the link', () => {
    const window = { rawBytes: 4 * MiB, elapsedMs: 335, linkWaitMs: 330, compressMs: 0.3 };
    expect(decideCompression(false, window, { bytesPerMs: 450_000, ratio: 0.95 })).toBe(false);
    expect(decideCompression(false, window, undefined)).toBe(false);
  });

  it('goes on while the link still keeps the sender waiting, and stops when the CPU becomes the limit', () => {
    // At 100 Mbit/s with half of the bytes saved, the sender still waits most of the time.
    expect(decideCompression(true, { rawBytes: 4 * MiB, elapsedMs: 190, linkWaitMs: 170, compressMs: 9 }, ZSTD)).toBe(
      true,
    );
    // A faster link: compressing the window took 44 ms, waiting for the link only 5 ms.
    expect(decideCompression(true, { rawBytes: 4 * MiB, elapsedMs: 60, linkWaitMs: 5, compressMs: 44 }, DEFLATE)).toBe(
      false,
    );
    // No wait at all.
    expect(decideCompression(true, { rawBytes: 4 * MiB, elapsedMs: 50, linkWaitMs: 0, compressMs: 44 }, DEFLATE)).toBe(
      false,
    );
  });

  it('stops when compressing did not make the data move faster than without (a receiver short of CPU)', () => {
    // The sender waits as much as on a slow link, but 1 MiB still takes 20 ms, as it did off.
    const window = { rawBytes: MiB, elapsedMs: 20, linkWaitMs: 15, compressMs: 2.3 };
    const offRate = MiB / 20;
    expect(decideCompression(true, window, ZSTD)).toBe(true);
    expect(decideCompression(true, window, ZSTD, offRate)).toBe(false);
    // Over a slow link, the same data moves 1.7 times as fast compressed: on it goes.
    expect(decideCompression(true, { ...window, elapsedMs: 20 / 1.7 }, ZSTD, offRate)).toBe(true);
  });

  it('does not flap between the two marks: a wait between keep and start leaves the state as it is', () => {
    // Compressing 4 MiB costs ~9.3 ms; waiting 10 ms is enough to keep it on, not to start it.
    const window = { rawBytes: 4 * MiB, elapsedMs: 40, linkWaitMs: 10, compressMs: 9.3 };
    expect(decideCompression(true, window, ZSTD)).toBe(true);
    expect(decideCompression(false, { ...window, compressMs: 0.3 }, ZSTD)).toBe(false);
  });

  it('counts overlapping waits of several disks as the window at most', () => {
    const window = { rawBytes: 4 * MiB, elapsedMs: 30, linkWaitMs: 500, compressMs: 0 };
    // 500 ms of waits summed over disks count as the window's 30 ms: enough to hide 3 × 9.3 ms.
    expect(decideCompression(false, window, ZSTD)).toBe(true);
    expect(decideCompression(false, { ...window, elapsedMs: 25 }, ZSTD)).toBe(false);
  });
});

describe('CodecGovernor', () => {
  /** A governor on a fake clock, with 1 MiB windows of 16 blocks of 64 KiB. */
  function governor() {
    let now = 0;
    const g = new CodecGovernor({
      windowBytes: MiB,
      windowMs: 0,
      horizonMs: 0,
      sampleEvery: 4,
      startBytes: 0,
      now: () => now,
    });
    return { g, advance: (ms: number) => (now += ms) };
  }
  const BLOCK = 64 * 1024;

  /** Sends one window: every block either compressed (as `wants` says) or not, on a given link. */
  function window(
    { g, advance }: ReturnType<typeof governor>,
    link: { msPerBlock: number; waitPerBlock: number },
  ): { compressed: number } {
    let compressed = 0;
    for (let i = 0; i < 16; i++) {
      // The clock moves before the block is counted: the 16th block closes the window.
      g.waitBegin();
      advance(link.waitPerBlock);
      g.waitEnd();
      advance(link.msPerBlock - link.waitPerBlock);
      if (g.wants()) {
        compressed++;
        g.block(BLOCK, { outBytes: BLOCK / 2, ms: 0.15 });
      } else g.block(BLOCK);
    }
    return { compressed };
  }

  it('samples while off, switches on over a slow link, and off again when the link gets fast', () => {
    const state = governor();
    // Window 1: off, one block in four is a sample (plus the first, which only warms the codec up).
    expect(window(state, { msPerBlock: 5, waitPerBlock: 4.5 }).compressed).toBe(5);
    expect(state.g.compressing).toBe(true);
    expect(state.g.measured?.ratio).toBeCloseTo(0.5);
    // Window 2: every block compressed; the link still keeps the sender waiting.
    expect(window(state, { msPerBlock: 2.6, waitPerBlock: 2.2 }).compressed).toBe(16);
    expect(state.g.compressing).toBe(true);
    // Window 3: the link became fast, the sender no longer waits: off.
    window(state, { msPerBlock: 0.2, waitPerBlock: 0 });
    expect(state.g.compressing).toBe(false);
    expect(state.g.windows).toBe(3);
    expect(state.g.windowsOn).toBe(2);
  });

  it('tries again less and less often when compressing does not pay (a receiver short of CPU)', () => {
    const state = governor();
    // The sender waits 4.5 of every 5 ms whether it compresses or not: the receiver sets the pace.
    for (let i = 0; i < 200; i++) window(state, { msPerBlock: 5, waitPerBlock: 4.5 });
    expect(state.g.windows).toBe(200);
    // Each trial lasts two windows; the waits between trials double up to 64 windows.
    expect(state.g.windowsOn).toBeLessThan(20);
    expect(state.g.windowsOn).toBeGreaterThan(0);
  });

  it('keeps compressing while the target still takes bytes queued before the switch, then judges', () => {
    let now = 0;
    const progress = { sent: 0, acked: 0 };
    const g = new CodecGovernor({
      windowBytes: MiB,
      windowMs: 0,
      horizonMs: 0,
      sampleEvery: 4,
      startBytes: 0,
      now: () => now,
      progress: () => progress,
    });
    const send = (wait: number, ms: number) => {
      for (let i = 0; i < 16; i++) {
        g.waitBegin();
        now += wait;
        g.waitEnd();
        now += ms - wait;
        progress.sent += BLOCK;
        if (g.wants()) g.block(BLOCK, { outBytes: BLOCK / 2, ms: 0.15 });
        else g.block(BLOCK);
      }
    };
    send(4.5, 5);
    expect(g.compressing).toBe(true);
    // The acks lag: the sender does not wait at all for a while (the socket's backlog drains).
    send(0, 0.2);
    send(0, 0.2);
    expect(g.compressing).toBe(true);
    // Everything sent before the switch is acked: the next window is judged, and it did not wait.
    progress.acked = progress.sent;
    send(0, 0.2);
    send(0, 0.2);
    expect(g.compressing).toBe(false);
  });

  it('decides on half a second of windows: a stall now and then starts nothing, a bursty slow link does', () => {
    let now = 0;
    const g = new CodecGovernor({ windowBytes: MiB, windowMs: 0, sampleEvery: 4, startBytes: 0, now: () => now });
    const send = (blocks: number, wait: number, ms: number) => {
      for (let i = 0; i < blocks; i++) {
        g.waitBegin();
        now += wait;
        g.waitEnd();
        now += ms - wait;
        if (g.wants()) g.block(BLOCK, { outBytes: BLOCK / 2, ms: 0.15 });
        else g.block(BLOCK);
      }
    };
    // Loopback into a receiver that syncs its disk now and then: 30 MiB at 1 GB/s, then a 100 ms stall.
    for (let i = 0; i < 20; i++) {
      send(480, 0.01, 0.065);
      send(1, 100, 100);
    }
    expect(g.windowsOn).toBe(0);
    // A slow link that takes the window of unacked bytes in bursts: 4 MiB at once, then 1.6 s of waiting.
    for (let i = 0; i < 4 && !g.compressing; i++) {
      send(63, 0.01, 0.05);
      send(1, 1600, 1600);
    }
    expect(g.compressing).toBe(true);
  });

  describe('the start burst', () => {
    /** A governor with the default start burst (4 MiB) and half-second decisions. */
    function started() {
      let now = 0;
      const g = new CodecGovernor({ windowBytes: MiB, windowMs: 0, sampleEvery: 256, now: () => now });
      const send = (blocks: number, wait: number, ms: number) => {
        let compressed = 0;
        for (let i = 0; i < blocks; i++) {
          g.waitBegin();
          now += wait;
          g.waitEnd();
          now += ms - wait;
          if (g.wants()) {
            compressed++;
            g.block(BLOCK, { outBytes: BLOCK / 2, ms: 0.3 });
          } else g.block(BLOCK);
        }
        return compressed;
      };
      return { g, send };
    }

    it('is compressed, and over a slow link compressing goes on at once', () => {
      const { g, send } = started();
      // 4 MiB handed to the socket at once (it takes them into its buffers)…
      expect(send(64, 0, 0.05)).toBe(64);
      // …then the next block only after a wait for the link to take some (100 Mbit/s, 2 MiB acked):
      // the burst's window decides, without waiting for the half-second horizon.
      expect(send(1, 170, 170)).toBe(1);
      expect(g.windows).toBe(1);
      expect(g.compressing).toBe(true);
      expect(g.measured?.ratio).toBeCloseTo(0.5);
      expect(send(16, 4.5, 5)).toBe(16);
    });

    it('over a fast link, is all that is compressed', () => {
      const { g, send } = started();
      expect(send(64, 0, 0.05)).toBe(64);
      let compressed = 0;
      for (let i = 0; i < 40; i++) compressed += send(64, 0.005, 0.06);
      expect(g.compressing).toBe(false);
      expect(g.windowsOn).toBe(0);
      // The block that closed the burst's window, then one sample in 256 blocks.
      expect(compressed).toBeLessThanOrEqual(12);
    });

    /** A governor with the start burst and the target's acks: the link acks `ackPerMs` bytes a ms. */
    function withAcks(ackPerMs: number) {
      let now = 0;
      const progress = { sent: 0, acked: 0 };
      const g = new CodecGovernor({
        windowBytes: MiB,
        windowMs: 0,
        sampleEvery: 256,
        now: () => now,
        progress: () => progress,
      });
      const send = (blocks: number, ms: number) => {
        for (let i = 0; i < blocks; i++) {
          now += ms;
          progress.acked = Math.min(progress.sent, Math.floor(now * ackPerMs));
          progress.sent += g.compressing ? BLOCK / 2 : BLOCK;
          if (g.wants()) g.block(BLOCK, { outBytes: BLOCK / 2, ms: 0.3 });
          else g.block(BLOCK);
        }
      };
      /** Sends blocks 0.3 ms apart until the first decision; how many it took. */
      const untilDecided = () => {
        let blocks = 0;
        for (; g.windows === 0 && blocks < 1000; blocks++) send(1, 0.3);
        return blocks;
      };
      return { g, untilDecided };
    }

    it('waits for the first ack when it has the acks: a slow link keeps compressing on', () => {
      // 100 Mbit/s: 12.5 bytes a µs; the socket takes the burst without a wait.
      const { g, untilDecided } = withAcks(12_500);
      const blocks = untilDecided();
      // Past the 64 blocks of the burst, and past the first ack: 2 MiB taken by the link.
      expect(blocks).toBeGreaterThan(64);
      expect(g.compressing).toBe(true);
    });

    it('waits for the first ack when it has the acks: a fast link turns compressing off', () => {
      // Loopback: the target acks 400 MB/s, faster than the compressor's 218 MB/s can feed it.
      const { g, untilDecided } = withAcks(400_000);
      const blocks = untilDecided();
      expect(blocks).toBe(65);
      expect(g.compressing).toBe(false);
    });
  });

  it('never switches on over a fast link', () => {
    const state = governor();
    for (let i = 0; i < 5; i++) window(state, { msPerBlock: 0.1, waitPerBlock: 0.05 });
    expect(state.g.windowsOn).toBe(0);
  });
});
