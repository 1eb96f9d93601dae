import { performance } from 'node:perf_hooks';
import { MIN_SAVING } from './codecs.js';
import { MIN_ADAPTIVE_WINDOW } from './window-sizer.js';

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
export const START_FACTOR = 3;
/** Compressing goes on while the wait for the link still covers this share of the compressing time. */
export const KEEP_FACTOR = 0.5;
/** The link is a bottleneck only when the sender waited for it this share of the window, at least. */
export const MIN_WAIT_SHARE = 0.1;
/**
 * Compressing must move data at least this many times as fast as the windows sent without it
 * did, or it stops: what decides is the run's speed, measured, not the model of the link.
 */
export const MIN_GAIN = 1.1;
/** Blocks tried in a row for a sample that looks compressible, at most. */
export const SAMPLE_TRIES = 16;
/** Compressed windows that may pass after switching on before one must show the gain. */
export const MAX_TRANSIENT = 3;
/** After a trial that did not pay, compressing is not tried again for up to this many decisions. */
export const MAX_HOLD_OFF = 128;
/**
 * Compressing goes on after the start burst when the target acked the burst's data at most
 * 1/`START_ACK_FACTOR` as fast as the compressor runs: a link that slow keeps the sender
 * waiting whatever the compressor costs.
 */
export const START_ACK_FACTOR = 8;

/**
 * The decision for the next window, as a pure function: compress only while the link (its
 * bandwidth, a bandwidth cap) and not this side's CPU is what limits the run, and only data
 * that compresses well enough to pay. Off, it starts when the link kept the sender waiting at
 * least `START_FACTOR` times as long as compressing the window would take (from the
 * compressor's measured speed). On, given `offBytesPerMs` (the data rate of the windows sent
 * without compressing), it goes on only while the window moved data at least `MIN_GAIN`
 * times as fast: measured, not modelled (a receiver short of CPU also keeps the sender waiting,
 * and compressing for it only makes both ends work more), and while the sender still waits for
 * the link at all (one that no longer waits is bound by its CPU). Without that figure it goes
 * on while the wait for the link still covers half the compressing time.
 */
export function decideCompression(
  compressing: boolean,
  window: CodecWindow,
  estimate: CodecEstimate | undefined,
  offBytesPerMs?: number,
): boolean {
  if (!estimate || estimate.ratio > 1 - MIN_SAVING || !(estimate.bytesPerMs > 0)) return false;
  const wait = Math.min(window.linkWaitMs, window.elapsedMs);
  if (!compressing) {
    if (wait < MIN_WAIT_SHARE * window.elapsedMs || wait <= 0) return false;
    return wait >= START_FACTOR * (window.rawBytes / estimate.bytesPerMs);
  }
  // A sender that no longer waits for the link is bound by its CPU: off (and measure again).
  if (wait < MIN_WAIT_SHARE * window.elapsedMs || wait <= 0) return false;
  // Measured: the data moved at least MIN_GAIN times as fast as without compressing.
  if (offBytesPerMs !== undefined) return window.rawBytes / window.elapsedMs >= MIN_GAIN * offBytesPerMs;
  // No measurement to compare with: the model (the wait still hides the compressing).
  return wait >= KEEP_FACTOR * window.compressMs;
}

/** Options of a {@link CodecGovernor}. */
export interface CodecGovernorOptions {
  /**
   * Decisions are taken on this much time of windows at least, summed: a link's flow comes in
   * bursts (a window of unacked bytes sent at once, then a wait for acks) and one window of it
   * says little; a receiver's single long stall says little either. @default 500
   */
  horizonMs?: number;
  /**
   * A decision window holds this many data bytes at least… @default 1 MiB (84 ms at 100 Mbit/s)
   */
  windowBytes?: number;
  /**
   * …and lasts this long at least, so that on a fast link a window is long enough to measure
   * (10 MiB at 500 MB/s). @default 20
   */
  windowMs?: number;
  /**
   * While off, one compressible-looking block in this many is compressed as a sample (node:zlib's
   * deflate costs ~20 CPU-s per GiB: one block in 256 adds ~0.08 CPU-s/GiB). @default 256
   */
  sampleEvery?: number;
  /**
   * Payload bytes sent and acked by the target so far (every disk of the session). A window
   * counts for the gain of a mode only once everything sent before the last switch is acked:
   * until then the target still works through bytes queued in the other mode. Without it, every
   * window counts.
   */
  progress?: () => { sent: number; acked: number };
  /** The clock, ms. @default performance.now */
  now?: () => number;
  /**
   * The session's first window is compressed and holds this many data bytes at least (the first
   * window of unacked bytes, sent at once before the link's speed can show); it decides alone,
   * without waiting for `horizonMs`: over a slow link it ends in a long wait for the link to
   * take the burst, and compressing goes on; over a fast one it ends without one, and the burst
   * cost a few ms of CPU. A burst sent raw would be lost for good on a short transfer. 0: start
   * off, sampling. @default 4 MiB (the smallest adaptive window)
   */
  startBytes?: number;
}

/**
 * The `auto` codec's switch on the source side of a session: tells for each data block whether
 * it goes through the codec, measures the windows (see {@link CodecWindow}) and decides with
 * {@link decideCompression} on `horizonMs` of steady windows summed (a trial on half of that).
 * While off it still compresses one block
 * in {@link CodecGovernorOptions.sampleEvery} (sent compressed when that pays), so the
 * compressor's speed and the data's ratio stay known. Starts on, for the first window only
 * (see {@link CodecGovernorOptions.startBytes}).
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
  /** When the window began: at its first block (the session's opening is not part of it). */
  private start: number | undefined;
  private rawBytes = 0;
  private linkWaitMs = 0;
  private compressMs = 0;
  private compressedIn = 0;
  private compressedOut = 0;
  private blocks = 0;
  private sampleDue = true;
  private sampleTries = 0;
  /** Payload sent when the mode last switched; a window is steady once all of it is acked. */
  private switchMark = 0;
  /** Whether the window under way began steady. */
  private steady = true;
  /** The steady windows since the last decision, summed: a decision needs `horizonMs` of them. */
  private horizon = { rawBytes: 0, elapsedMs: 0, linkWaitMs: 0, compressMs: 0 };
  private readonly horizonMs: number;
  /** Decisions taken since switching on. */
  private judged = 0;
  /** Windows compressed since the switch before one was steady. */
  private transient = 0;
  /** Data rate of the last horizon sent without compressing (bytes/ms). */
  private offRate: number | undefined;
  private readonly progress: (() => { sent: number; acked: number }) | undefined;
  /** Decisions to skip before the next trial, and how many after the next failed one. */
  private holdOff = 0;
  private nextHoldOff = 1;
  private waiting = 0;
  private waitSince = 0;
  /** False until the codec ran once: its first call pays its set-up, which says nothing of its speed. */
  private warm = false;
  /** See {@link CodecGovernorOptions.startBytes}. */
  private readonly startBytes: number;
  /** Payload acked when the first window began. */
  private ackedAtStart = 0;

  constructor(options: CodecGovernorOptions = {}) {
    this.windowBytes = options.windowBytes ?? 1024 * 1024;
    this.windowMs = options.windowMs ?? 20;
    this.sampleEvery = options.sampleEvery ?? 256;
    this.now = options.now ?? (() => performance.now());
    this.progress = options.progress;
    this.horizonMs = options.horizonMs ?? 500;
    this.startBytes = options.startBytes ?? MIN_ADAPTIVE_WINDOW;
    this.compressing = this.startBytes > 0;
  }

  /**
   * Whether the next data block may go through the codec (if it looks compressible): every one
   * when on; when off, one in `sampleEvery`, and, when that one does not look compressible, the
   * next ones until one does (up to `SAMPLE_TRIES`), so that a pattern of random and text
   * blocks cannot hide the text from the samples. Blocks that are not sampled are not even
   * looked at: the look (`worthCompressing`) costs ~0.15 CPU-s per GiB.
   */
  wants(): boolean {
    return this.compressing || this.sampleDue;
  }

  /**
   * Counts a data block sent; `compressed` tells what the codec did with it, if it ran: bytes
   * out (its raw length when compressing did not pay) and the time it took.
   */
  block(rawBytes: number, compressed?: { outBytes: number; ms: number }): void {
    if (this.start === undefined) {
      // The first block: the window begins now; waits before it (the session opening) do not count.
      this.start = this.now();
      this.linkWaitMs = 0;
      if (this.waiting > 0) this.waitSince = this.start;
      this.ackedAtStart = this.progress?.().acked ?? 0;
    }
    this.rawBytes += rawBytes;
    if (compressed && !this.warm) {
      // The codec's first call: not counted, and the next block is sampled instead.
      this.warm = true;
      compressed = undefined;
    } else if (++this.blocks % this.sampleEvery === 0) this.sampleDue = true;
    else if (compressed || (this.sampleDue && ++this.sampleTries >= SAMPLE_TRIES)) {
      this.sampleDue = false;
      this.sampleTries = 0;
    }
    if (compressed) {
      this.compressedIn += rawBytes;
      this.compressedOut += compressed.outBytes;
      this.compressMs += compressed.ms;
    }
    const full = this.windows === 0 && this.startBytes > 0 ? this.startDone() : this.rawBytes >= this.windowBytes;
    if (full && this.now() - this.start >= this.windowMs) this.close(this.start);
  }

  /** Folds the window's compressed blocks into the estimate (half the weight to the newest). */
  private measure(): void {
    if (this.compressedIn > 0) {
      const ratio = this.compressedOut / this.compressedIn;
      // A window too fast for the clock to see says the compressor is very fast: 1 µs then.
      const bytesPerMs = this.compressedIn / Math.max(this.compressMs, 0.001);
      // Data changes, and so does the CPU's load.
      this.estimate = this.estimate
        ? { ratio: (this.estimate.ratio + ratio) / 2, bytesPerMs: (this.estimate.bytesPerMs + bytesPerMs) / 2 }
        : { ratio, bytesPerMs };
    }
    this.compressedIn = 0;
    this.compressedOut = 0;
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

  /**
   * Whether the start burst's window is over: past the burst, and once the target acked some of
   * it (the first ack tells how fast the link takes data: within milliseconds on a fast one, only
   * after the link carried half a window on a slow one), or past four bursts without an ack.
   * Without acks to look at (no `progress`), at the first block past the burst: one the sender
   * could hand over only once the link took some of it.
   */
  private startDone(): boolean {
    const burst = Math.max(this.windowBytes, this.startBytes);
    if (this.rawBytes <= burst) return false;
    const acked = this.progress?.().acked;
    return acked === undefined || acked > this.ackedAtStart || this.rawBytes > 4 * burst;
  }

  /**
   * Whether compressing goes on after the start burst's window. With the target's acks known:
   * while the link took the burst at most 1/{@link START_ACK_FACTOR} of the compressor's speed
   * (the socket's and the link's buffers take a burst in at once, so the sender's own wait says
   * little yet; acks come only as fast as the link delivers). Without them: the keep rule.
   */
  private keepAfterStart(window: CodecWindow, elapsedMs: number): boolean {
    const acked = this.progress?.().acked;
    const estimate = this.estimate;
    if (acked === undefined || !estimate) return decideCompression(true, window, estimate);
    if (estimate.ratio > 1 - MIN_SAVING) return false;
    const linkBytesPerMs = (acked - this.ackedAtStart) / Math.max(elapsedMs, 0.001);
    return estimate.bytesPerMs >= START_ACK_FACTOR * linkBytesPerMs;
  }

  private close(start: number): void {
    const end = this.now();
    if (this.waiting > 0) {
      // A wait that goes on into the next window: its part so far belongs to this one.
      this.linkWaitMs += end - this.waitSince;
      this.waitSince = end;
    }
    this.measure();
    const elapsedMs = end - start;
    const was = this.compressing;
    let next = was;
    if (this.steady) {
      const h = this.horizon;
      h.rawBytes += this.rawBytes;
      h.elapsedMs += elapsedMs;
      h.linkWaitMs += Math.min(this.linkWaitMs, elapsedMs);
      h.compressMs += this.compressMs;
      // The start burst's window decides alone.
      const early = this.windows === 0 && was && this.startBytes > 0;
      // A trial is judged on half the horizon: each one costs CPU when it does not pay.
      if (early || h.elapsedMs >= (was ? this.horizonMs / 2 : this.horizonMs)) {
        const rate = h.rawBytes / Math.max(h.elapsedMs, 0.001);
        // Only steady windows tell what compressing gains: before them, the target was still
        // taking the bytes queued before the switch.
        next = early
          ? this.keepAfterStart(h, elapsedMs)
          : decideCompression(was, h, this.estimate, was ? this.offRate : undefined);
        if (!was) {
          this.offRate = rate;
          if (next && this.holdOff > 0) {
            this.holdOff--;
            next = false;
          }
        } else if (!next) {
          // A trial that did not pay at its first judgment: wait longer before the next one.
          // One that paid for a while resets the wait.
          if (this.judged === 0) {
            this.holdOff = this.nextHoldOff;
            this.nextHoldOff = Math.min(MAX_HOLD_OFF, this.nextHoldOff * 4);
          } else this.nextHoldOff = 1;
        }
        if (was) this.judged++;
        this.horizon = { rawBytes: 0, elapsedMs: 0, linkWaitMs: 0, compressMs: 0 };
      }
    } else if (was && this.transient++ >= MAX_TRANSIENT) {
      // The acks lag more than a few windows: count the next windows as steady.
      this.switchMark = 0;
    }
    const progress = this.progress?.();
    if (next !== was) {
      this.transient = 0;
      this.judged = 0;
      this.horizon = { rawBytes: 0, elapsedMs: 0, linkWaitMs: 0, compressMs: 0 };
      this.switchMark = progress?.sent ?? 0;
    }
    this.steady = progress === undefined || progress.acked >= this.switchMark;
    this.compressing = next;
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
