import type { ErrorCode } from '../errors.js';

/**
 * How the scheduler treats a failed run:
 * - `transient`: likely to pass when tried again (the network, a busy or locked resource): retried
 *   with backoff;
 * - `permanent`: the same run will fail the same way (refused credentials, a broken rule, a missing
 *   VM): not retried; the job's next slot tries again;
 * - `needs-decision`: a person must decide (the replica was booted or changed, the storage is full,
 *   a verification found different data): the job is held until it is resumed.
 */
export type ErrorClass = 'transient' | 'permanent' | 'needs-decision';

/** The class of every error code (documented in docs/daemon.md). */
export const ERROR_CLASSES: Readonly<Record<ErrorCode, ErrorClass>> = {
  E_TRANSPORT: 'transient',
  E_IO: 'transient',
  E_CONFLICT: 'transient',
  E_DRIVER: 'transient',
  E_ABORTED: 'transient',
  E_INPUT: 'permanent',
  E_JOB: 'permanent',
  E_RULE: 'permanent',
  E_NOT_FOUND: 'permanent',
  E_AUTH: 'permanent',
  E_FORMAT: 'permanent',
  E_STATE: 'permanent',
  E_INTERNAL: 'permanent',
  E_UNSUPPORTED: 'permanent',
  // Upgrade this worker: the shared store was migrated by a newer version.
  E_STORE_VERSION: 'permanent',
  // The lease's new holder resumes the run; this worker tries again at its next slot or retry.
  E_LEASE_LOST: 'transient',
  E_REPLICA_MODIFIED: 'needs-decision',
  E_REPLICA_IN_PROGRESS: 'needs-decision',
  E_NO_SPACE: 'needs-decision',
  E_VERIFY: 'needs-decision',
  // A failed-over (or retired) replica takes no runs until undo or commit: a person decides.
  E_FAILED_OVER: 'needs-decision',
  E_SPLIT_BRAIN: 'needs-decision',
};

/**
 * The class of an error code; a code this version does not know (a newer driver's) is `permanent`,
 * so it is never retried in a loop.
 */
export function classifyError(code: string): ErrorClass {
  return ERROR_CLASSES[code as ErrorCode] ?? 'permanent';
}
