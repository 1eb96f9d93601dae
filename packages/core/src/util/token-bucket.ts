import { setTimeout as sleep } from 'node:timers/promises';
import { InputError, throwIfAborted } from '../errors.js';

/**
 * Caps a byte rate: `take(n)` resolves when `n` bytes may go. The bucket holds at most one second
 * of tokens, so a burst after an idle spell stays short.
 */
export class TokenBucket {
  private tokens: number;
  private last = performance.now();
  private readonly capacity: number;

  /** @param bytesPerSecond - the cap; must be at least 1. */
  constructor(readonly bytesPerSecond: number) {
    if (!Number.isFinite(bytesPerSecond) || bytesPerSecond < 1) {
      throw new InputError(`bandwidth limit must be at least 1 byte/s, got ${bytesPerSecond}`);
    }
    this.capacity = bytesPerSecond;
    this.tokens = 0;
  }

  /** Waits until `bytes` may be sent. Requests larger than a second's worth go through in turns. */
  async take(bytes: number, signal?: AbortSignal): Promise<void> {
    let remaining = bytes;
    while (remaining > 0) {
      throwIfAborted(signal);
      const now = performance.now();
      this.tokens = Math.min(this.capacity, this.tokens + ((now - this.last) / 1000) * this.bytesPerSecond);
      this.last = now;
      const grant = Math.min(remaining, this.capacity);
      if (this.tokens >= grant) {
        this.tokens -= grant;
        remaining -= grant;
        continue;
      }
      const waitMs = ((grant - this.tokens) / this.bytesPerSecond) * 1000;
      await sleep(Math.max(1, Math.ceil(waitMs)), undefined, signal ? { signal } : undefined).catch(() => undefined);
    }
  }
}
