import { AbortError, isReplikitError } from '../errors.js';

/** Why a run was stopped at a checkpoint and left unfinished (see `RunOptions.suspend`). */
export type StopReason = 'stopped' | 'window' | (string & {});

/**
 * The stop reason a `suspend` signal carries: its `reason` when that is a non-empty string (the
 * daemon passes `window` at a maintenance window's edge), else `stopped`.
 */
export function stopReasonOf(suspend: AbortSignal): StopReason {
  const reason: unknown = suspend.reason;
  return typeof reason === 'string' && reason.length > 0 ? reason : 'stopped';
}

/**
 * The error a stopped run's `run()`/`resume()` rejects with: `E_ABORTED`, `details.stopped` (the
 * reason) and `details.runId`. The run is unfinished and resumable from its journal.
 */
export function runStoppedError(runId: string, reason: StopReason): AbortError {
  return new AbortError(
    `run ${runId} stopped at a checkpoint (${reason}) and is unfinished; continue it with \`replikit resume ${runId}\` (the daemon resumes it by itself)`,
    { details: { runId, stopped: reason } },
  );
}

/** True for the error of a run stopped at a checkpoint: `E_ABORTED` whose `details.stopped` names the reason. */
export function isRunStopped(error: unknown): boolean {
  return isReplikitError(error, 'E_ABORTED') && typeof error.details?.stopped === 'string';
}
