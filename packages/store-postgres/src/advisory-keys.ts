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

/**
 * The first key of the run-limit slots' advisory locks (`'rpls'`), apart from the store's other
 * locks so that a slot never collides with a job lock.
 */
const SLOT_NAMESPACE = 0x72706c73;

/**
 * The key pair of slot `slot` of the limit on `scope` (`host` or `target`) key `key`: the second
 * key is a 32-bit FNV-1a hash of the three. Two slots whose hashes collide share one lock, which
 * can only make a run wait longer, never let more runs through than a limit allows.
 */
export function limitSlotKey(scope: string, key: string, slot: number): [number, number] {
  let hash = 0x811c9dc5;
  for (const byte of Buffer.from(`${scope}\0${key}\0${slot}`, 'utf8')) {
    hash ^= byte;
    hash = Math.imul(hash, 0x01000193);
  }
  return [SLOT_NAMESPACE, hash | 0];
}
