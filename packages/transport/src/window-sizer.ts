/** The smallest window an adaptive sizer uses, before and after it has measured the link. */
export const MIN_ADAPTIVE_WINDOW = 4 * 1024 * 1024;

/**
 * Window bytes per byte of the measured bandwidth-delay product: 2 because the source asks for an
 * ack when half the window is unacked, and 2 more of headroom, so that the window can grow while
 * the link is not yet full (the rate measured is then the window's, not the link's).
 */
const BDP_FACTOR = 4;

/** Rate samples kept (one per ack); the window follows the largest. */
const RATE_SAMPLES = 16;

/**
 * Sizes a stream's window of unacked bytes to the link it crosses instead of a constant: it times
 * each `flush` to its `ack` (the smallest such time is the round trip without queueing, the
 * target's write included) and measures the acked bytes per second between acks (the largest
 * recent sample is the bandwidth), and keeps the window at {@link BDP_FACTOR} × bandwidth × round
 * trip, never under {@link MIN_ADAPTIVE_WINDOW} (or `cap`, if lower) and never over `cap` (the
 * memory the caller allows). Times are in milliseconds from any fixed origin.
 */
export class WindowSizer {
  private minRttMs = Number.POSITIVE_INFINITY;
  private flushSentAt: number | undefined;
  private lastAckAt: number | undefined;
  private readonly rates: number[] = [];
  private current: number;

  /**
   * @param cap - The most bytes the window may hold.
   * @param adaptive - False keeps the window at `cap`, as before windows adapted.
   */
  constructor(
    private readonly cap: number,
    private readonly adaptive = true,
  ) {
    this.current = adaptive ? Math.min(cap, MIN_ADAPTIVE_WINDOW) : cap;
  }

  /** Bytes of payload the window may hold now. */
  get limit(): number {
    return this.current;
  }

  /** The round trip measured (flush to ack, without queueing), in ms; undefined before the first ack. */
  get rttMs(): number | undefined {
    return Number.isFinite(this.minRttMs) ? this.minRttMs : undefined;
  }

  /** A `flush` went out at `now` (only the first of those outstanding is timed). */
  flushSent(now: number): void {
    this.flushSentAt ??= now;
  }

  /** An `ack` arrived at `now`, freeing `bytes` of the window. */
  acked(now: number, bytes: number): void {
    if (this.flushSentAt !== undefined) {
      this.minRttMs = Math.min(this.minRttMs, Math.max(now - this.flushSentAt, 0.01));
      this.flushSentAt = undefined;
    }
    if (this.lastAckAt !== undefined && now > this.lastAckAt && bytes > 0) {
      this.rates.push((bytes * 1000) / (now - this.lastAckAt));
      if (this.rates.length > RATE_SAMPLES) this.rates.shift();
    }
    this.lastAckAt = now;
    if (!this.adaptive || this.rates.length === 0 || !Number.isFinite(this.minRttMs)) return;
    const bandwidth = Math.max(...this.rates);
    const wanted = Math.ceil(BDP_FACTOR * bandwidth * (this.minRttMs / 1000));
    this.current = Math.min(this.cap, Math.max(MIN_ADAPTIVE_WINDOW, wanted));
  }
}
