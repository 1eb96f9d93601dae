import type { RetryOptions } from './schedule-options.js';

/**
 * The delay before retry number `attempt` (1 for the first): `initialDelay × 2^(attempt−1)`,
 * capped at `maxDelay`, then jittered into its upper half (`random()` in [0, 1)), so that many
 * jobs failing together do not retry together, and a retry never comes sooner than half the delay.
 */
export function backoffDelay(attempt: number, retry: RetryOptions, random: () => number = Math.random): number {
  const exponent = Math.min(Math.max(attempt - 1, 0), 40);
  const capped = Math.min(retry.maxDelay, retry.initialDelay * 2 ** exponent);
  return Math.round(capped / 2 + (capped / 2) * random());
}
