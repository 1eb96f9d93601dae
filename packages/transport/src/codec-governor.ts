import { performance } from 'node:perf_hooks';
import { MIN_SAVING } from './codecs.js';

/** What the source side measured over one window of data blocks. */
export interface CodecWindow {
  /** Data bytes of the blocks sent in the window (before compression). */
  rawBytes: number;
  /** Wall time the window took, ms. */
  elapsedMs: number;
  /**
   * Time the sender waited for the link in the window, ms: for the socket to drain, for room in
   * the window of unacked bytes, for acks, for the bandwidth cap (counted as `elapsedMs` at most).
   */
  linkWaitMs: number;
  /** Time spent compressing in the window (every block when on, the samples when off), ms. */
  compressMs: number;
}

/** What the compressor has shown so far: its speed and what it saves. */
export interface CodecEstimate {
  /** Bytes the compressor takes per ms of compressing. */
  bytesPerMs: number;
  /** Compressed bytes over raw bytes (a block that did not pay counts at its raw size). */
  ratio: number;
}

/**
 * Compressing starts only when the window's wait for the link is at least this many times what
 * compressing the whole window would cost: the compressor's time then hides in that wait.
 */
export const START_FACTOR = 2;
/** Compressing goes on while the wait for the link still covers this share of the compressing time. */
export const KEEP_FACTOR = 0.5;
/** The link is a bottleneck only when the sender waited for it this share of the window, at least. */
export const MIN_WAIT_SHARE = 0.1;

/**
 * The decision for the next window, as a pure function: compress only while the link (its
 * bandwidth, a bandwidth cap, the receiver's back-pressure) and not this side's CPU is what
 * limits the run, and only data that compresses well enough to pay. Off, it starts when the
 * link kept the sender waiting at least {@link START_FACTOR} times as long as compressing the
 * window would take (from the compressor's measured speed); on, it stops as soon as the wait
 * for the link no longer covers half the compressing time (the CPU became the bottleneck: a
 * fast link, a slower compressor). The gap between the two marks keeps it from flapping.
 */
export function decideCompression(
  compressing: boolean,
  window: CodecWindow,
  estimate: CodecEstimate | undefined,
): boolean {
  if (!estimate || estimate.ratio > 1 - MIN_SAVING || !(estimate.bytesPerMs > 0)) return false;
  const wait = Math.min(window.linkWaitMs, window.elapsedMs);
  if (wait < MIN_WAIT_SHARE * window.elapsedMs || wait <= 0) return false;
  if (compressing) return wait >= KEEP_FACTOR * window.compressMs;
  return wait >= START_FACTOR * (window.rawBytes / estimate.bytesPerMs);
}

/** Options of a {@link CodecGovernor}. */
export interface CodecGovernorOptions {
  /**
   * A decision window holds this many data bytes at least… @default 1 MiB (84 ms at 100 Mbit/s)
   */
  windowBytes?: number;
  /**
   * …and lasts this long at least, so that on a fast link a window is long enough to measure
   * (10 MiB at 500 MB/s). @default 20
   */
  windowMs?: number;
  /** While off, one block in this many is compressed as a sample. @default 32 */
  sampleEvery?: number;
  /** The clock, ms. @default performance.now */
  now?: () => number;
}

/**
 * The `auto` codec's switch on the source side of a session: tells for each data block whether
 * it goes through the codec, measures the windows (see {@link CodecWindow}) and decides anew at
 * the end of each one with {@link decideCompression}. While off it still compresses one block
 * in {@link CodecGovernorOptions.sampleEvery} (sent compressed when that pays), so the
 * compressor's speed and the data's ratio stay known. Starts off.
 */
export class CodecGovernor {
  /** True while every block goes through the codec. */
  compressing = false;
  /** Windows closed so far, and how many of them compressed (for reports and tests). */
  windows = 0;
  windowsOn = 0;
  private estimate: CodecEstimate | undefined;
  private readonly windowBytes: number;
  private readonly windowMs: number;
  private readonly sampleEvery: number;
  private readonly now: () => number;
  private start: number;
  private rawBytes = 0;
  private linkWaitMs = 0;
  private compressMs = 0;
  private compressedIn = 0;
  private compressedOut = 0;
  private candidates = 0;
  private waiting = 0;
  private waitSince = 0;

  constructor(options: CodecGovernorOptions = {}) {
    this.windowBytes = options.windowBytes ?? 1024 * 1024;
    this.windowMs = options.windowMs ?? 20;
    this.sampleEvery = options.sampleEvery ?? 32;
    this.now = options.now ?? (() => performance.now());
    this.start = this.now();
  }

  /**
   * Whether the next data block that looks compressible goes through the codec: every one when
   * on, one in `sampleEvery` when off (counted among such blocks only, so that a pattern of
   * random and text blocks cannot hide the text from the samples).
   */
  wants(): boolean {
    return this.compressing || this.candidates++ % this.sampleEvery === 0;
  }

  /**
   * Counts a data block sent; `compressed` tells what the codec did with it, if it ran: bytes
   * out (its raw length when compressing did not pay) and the time it took.
   */
  block(rawBytes: number, compressed?: { outBytes: number; ms: number }): void {
    this.rawBytes += rawBytes;
    if (compressed) {
      this.compressedIn += rawBytes;
      this.compressedOut += compressed.outBytes;
      this.compressMs += compressed.ms;
    }
    if (this.rawBytes >= this.windowBytes && this.now() - this.start >= this.windowMs) this.close();
  }

  /**
   * Marks the start of a wait for the link (the socket to drain, room in the window, an ack, the
   * bandwidth cap); {@link CodecGovernor.waitEnd} ends it. Waits that overlap (several disks,
   * a sender and its pipeline) count once: the time during which any of them waited.
   */
  waitBegin(): void {
    if (this.waiting++ === 0) this.waitSince = this.now();
  }

  /** Ends a wait begun with {@link CodecGovernor.waitBegin}. */
  waitEnd(): void {
    if (--this.waiting === 0) this.linkWaitMs += this.now() - this.waitSince;
  }

  /** The compressor's measured speed and ratio, once it has compressed something. */
  get measured(): CodecEstimate | undefined {
    return this.estimate;
  }

  private close(): void {
    const end = this.now();
    if (this.waiting > 0) {
      // A wait that goes on into the next window: its part so far belongs to this one.
      this.linkWaitMs += end - this.waitSince;
      this.waitSince = end;
    }
    if (this.compressedIn > 0) {
      const ratio = this.compressedOut / this.compressedIn;
      // A window too fast for the clock to see says the compressor is very fast: 1 µs then.
      const bytesPerMs = this.compressedIn / Math.max(this.compressMs, 0.001);
      // Half the weight to the newest window: data changes, and so does the CPU's load.
      this.estimate = this.estimate
        ? { ratio: (this.estimate.ratio + ratio) / 2, bytesPerMs: (this.estimate.bytesPerMs + bytesPerMs) / 2 }
        : { ratio, bytesPerMs };
    }
    this.compressing = decideCompression(
      this.compressing,
      {
        rawBytes: this.rawBytes,
        elapsedMs: end - this.start,
        linkWaitMs: this.linkWaitMs,
        compressMs: this.compressMs,
      },
      this.estimate,
    );
    this.windows++;
    if (this.compressing) this.windowsOn++;
    this.start = end;
    this.rawBytes = 0;
    this.linkWaitMs = 0;
    this.compressMs = 0;
    this.compressedIn = 0;
    this.compressedOut = 0;
  }
}
