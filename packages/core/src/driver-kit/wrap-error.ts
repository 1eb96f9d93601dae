import { DriverError, isReplikitError, type ReplikitError, throwIfAborted } from '../errors.js';

/**
 * Turns what a driver hook threw into a {@link ReplikitError}: a `ReplikitError` passes unchanged;
 * when `signal` is aborted the abort wins (`E_ABORTED`); anything else (a platform SDK's error, a
 * `TypeError`) becomes a {@link DriverError} with the original as `cause`, so the engine journals a
 * stable code instead of `E_INTERNAL`.
 *
 * @param what - What was being done, for the message (`snapshot of VM 'web'`).
 */
export function wrapDriverError(error: unknown, what: string, signal?: AbortSignal): ReplikitError {
  if (isReplikitError(error)) return error;
  try {
    throwIfAborted(signal);
  } catch (aborted) {
    return aborted as ReplikitError;
  }
  const message = (error instanceof Error ? error.message : String(error)).replace(/\s+/g, ' ').trim();
  return new DriverError(`${what} failed: ${message || 'unknown error'}; see the cause for details`, { cause: error });
}
