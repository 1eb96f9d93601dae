import { AbortError } from '@replikit/core';

/** Waits `ms`, or rejects with `E_ABORTED` as soon as `signal` fires. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new AbortError());
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(new AbortError());
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Retry policy of XAPI calls and NBD reads. */
export interface RetryPolicy {
  /**
   * Attempts in all, the first included.
   * @default 8
   */
  attempts: number;
  /**
   * Delay before the first retry, doubled each time.
   * @default 200
   */
  baseDelayMs: number;
  /**
   * Longest delay between two attempts.
   * @default 5000
   */
  maxDelayMs: number;
}

/** The default retry policy (about 20 s in all, as XAPI's busy periods last). */
export const DEFAULT_RETRY: RetryPolicy = { attempts: 8, baseDelayMs: 200, maxDelayMs: 5000 };

/** The delay before retry number `retry` (0 for the first retry). */
export function backoffDelay(policy: RetryPolicy, retry: number): number {
  return Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** retry);
}

/** Rejects with `E_ABORTED` when `signal` fires before `promise` settles. */
export function raceAbort<T>(promise: Promise<T>, signal?: AbortSignal): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) {
    promise.catch(() => undefined);
    return Promise.reject(new AbortError());
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new AbortError());
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error) => {
        signal.removeEventListener('abort', onAbort);
        reject(error);
      },
    );
  });
}
