/**
 * Every stable warning code a run records (in `RunRecord.warnings` and the engine's `warning`
 * event). A code never changes meaning once released; new codes may be added. Each has a row in
 * `docs/errors.md` saying what happened and what to do.
 */
export const WARNING_CODES = [
  'W_RULE',
  'W_REPLICA_MODIFIED',
  'W_CACHE_MISSING',
  'W_CACHE_DISCARDED',
  'W_CACHE_LOST',
  'W_BACKUP_LOST',
  'W_TRANSFER_RESTARTED',
  'W_ROLLBACK',
  'W_NOT_ROLLED_BACK',
  'W_ABANDONED',
  'W_CLEANUP',
  'W_RUN_MORE_EXPENSIVE',
] as const;

/**
 * A stable warning code:
 *
 * - `W_RULE`: the job breaks a rule of warning severity.
 * - `W_REPLICA_MODIFIED`: the replica changed since the last run; this run compares every block.
 * - `W_CACHE_MISSING`: a disk has no replication cache yet.
 * - `W_CACHE_DISCARDED`: a disk's replication cache could not be used and was discarded.
 * - `W_CACHE_LOST`: the new replication cache was lost in a crash.
 * - `W_BACKUP_LOST`: the backup version of a run was lost.
 * - `W_TRANSFER_RESTARTED`: pending writes of a resumed run were dropped; the transfer restarts.
 * - `W_ROLLBACK`: a run asked to roll back had already committed; it is finished instead.
 * - `W_NOT_ROLLED_BACK`: a run's writes could not be rolled back.
 * - `W_ABANDONED`: a run was abandoned.
 * - `W_CLEANUP`: a snapshot or temporary item could not be deleted after a run, or the cleanup of a failed run failed.
 * - `W_RUN_MORE_EXPENSIVE`: a disk is read more fully than in the previous run, for a reason the
 *   user may not expect (a write outside replikit, a booted replica, a lost cache).
 */
export type WarningCode = (typeof WARNING_CODES)[number];
