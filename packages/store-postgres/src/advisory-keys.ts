/**
 * The first key of every advisory lock the store takes (`'rplk'` as a 32-bit integer), so that
 * its locks do not collide with an application's that shares the database.
 */
const NAMESPACE = 0x72706c6b;

/** The key pair of the migration lock. */
export const MIGRATION_LOCK: [number, number] = [NAMESPACE, 0];

/** The key pair of job `lockId`'s lock (job lock ids start at 1). */
export function jobLockKey(lockId: number): [number, number] {
  return [NAMESPACE, lockId];
}

/**
 * The key pair of the lock that serialises creating the run queue (job lock ids are positive,
 * so a negative second key never collides with one).
 */
export const QUEUE_CREATION_LOCK: [number, number] = [NAMESPACE, -1];
