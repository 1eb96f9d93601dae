import { AbortError } from '../errors.js';

/**
 * Where the scheduler reads the time and waits: the system clock in a daemon, a
 * {@link FakeClock} in tests (no test sleeps).
 */
export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  /**
   * Resolves once `now()` has reached `until` (milliseconds since the epoch); rejects with
   * `E_ABORTED` when `signal` aborts first.
   */
  sleepUntil(until: number, signal?: AbortSignal): Promise<void>;
}

/** The system clock: `Date.now()` and timers (long waits are cut into pieces under 2^31 ms). */
export const systemClock: Clock = {
  now: () => Date.now(),
  sleepUntil(until, signal) {
    return new Promise<void>((resolve, reject) => {
      if (signal?.aborted) {
        reject(new AbortError('the wait was cancelled'));
        return;
      }
      let timer: NodeJS.Timeout | undefined;
      const onAbort = () => {
        clearTimeout(timer);
        reject(new AbortError('the wait was cancelled'));
      };
      const arm = () => {
        const left = until - Date.now();
        if (left <= 0) {
          signal?.removeEventListener('abort', onAbort);
          resolve();
          return;
        }
        timer = setTimeout(arm, Math.min(left, 2 ** 30));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      arm();
    });
  },
};

interface Sleeper {
  until: number;
  resolve: () => void;
}

/**
 * A clock that moves only when told ({@link advanceTo}, {@link advanceToNext}): what tests of the
 * scheduler drive instead of waiting for real time. `sleepers` tells how many waits are pending, and
 * `onSleep` lets a test wait for the next one (an event, not a sleep).
 *
 * @example
 * ```ts
 * const clock = new FakeClock(Date.parse('2026-01-01T00:00:00Z'));
 * const daemon = new Daemon({ engine, jobs, clock });
 * await daemon.start();
 * await clock.whenSleeping(1); // the daemon waits for its first slot
 * clock.advanceToNext();       // the slot is due: the run starts
 * ```
 */
export class FakeClock implements Clock {
  private current: number;
  private readonly pending = new Set<Sleeper>();
  private readonly listeners = new Set<() => void>();

  /** @param start - the time to start at, milliseconds since the epoch. */
  constructor(start: number) {
    this.current = start;
  }

  now(): number {
    return this.current;
  }

  /** How many waits are pending. */
  get sleepers(): number {
    return this.pending.size;
  }

  /** The earliest pending wait's end, or `undefined`. */
  get nextWake(): number | undefined {
    let next: number | undefined;
    for (const sleeper of this.pending) if (next === undefined || sleeper.until < next) next = sleeper.until;
    return next;
  }

  sleepUntil(until: number, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(new AbortError('the wait was cancelled'));
    if (until <= this.current) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const sleeper: Sleeper = {
        until,
        resolve: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
      };
      const onAbort = () => {
        this.pending.delete(sleeper);
        reject(new AbortError('the wait was cancelled'));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.pending.add(sleeper);
      for (const listener of [...this.listeners]) listener();
    });
  }

  /** Sets the time to `time` (never backwards) and wakes every wait that ends by then. */
  advanceTo(time: number): void {
    this.current = Math.max(this.current, time);
    for (const sleeper of [...this.pending]) {
      if (sleeper.until <= this.current) {
        this.pending.delete(sleeper);
        sleeper.resolve();
      }
    }
  }

  /** Advances by `ms`. */
  advance(ms: number): void {
    this.advanceTo(this.current + ms);
  }

  /** Advances to the earliest pending wait's end; returns the new time, or `undefined` when nothing waits. */
  advanceToNext(): number | undefined {
    const next = this.nextWake;
    if (next !== undefined) this.advanceTo(next);
    return next;
  }

  /** Resolves once at least `count` waits are pending (at once when they already are). */
  whenSleeping(count: number): Promise<void> {
    if (this.pending.size >= count) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const listener = () => {
        if (this.pending.size >= count) {
          this.listeners.delete(listener);
          resolve();
        }
      };
      this.listeners.add(listener);
    });
  }
}
