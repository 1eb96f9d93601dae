import { hostname } from 'node:os';
import { ConflictError } from '@replikit/core';
import pg from 'pg';
import { jobLockKey } from './advisory-keys.js';

/**
 * Takes job `name`'s lock: a session-level advisory lock held by a connection of its own, so that
 * PostgreSQL releases it when the holding process dies (its connection closes). The holder's run
 * id and `host:pid` are kept in `replikit.job_locks` for the conflict message. Resolves to the
 * release function (which never rejects: a lock whose connection is lost has ended already);
 * rejects with `E_CONFLICT` while another session holds the lock.
 */
export async function takeJobLock(
  pool: pg.Pool,
  connection: pg.ClientConfig,
  name: string,
  runId: string,
): Promise<() => Promise<void>> {
  const { rows } = await pool.query<{ lock_id: number }>(
    `INSERT INTO replikit.job_locks (name) VALUES ($1)
     ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name
     RETURNING lock_id`,
    [name],
  );
  const lockId = rows[0]?.lock_id;
  if (lockId === undefined) throw new Error(`no lock id for job ${name}`);
  const client = new pg.Client(connection);
  // A connection lost while the lock is held ends the lock too; the error must not crash the process.
  client.on('error', () => undefined);
  await client.connect();
  try {
    const taken = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1, $2) AS ok', jobLockKey(lockId));
    if (!taken.rows[0]?.ok) {
      const holder = await client.query<{ run_id: string | null; holder: string | null }>(
        'SELECT run_id, holder FROM replikit.job_locks WHERE name = $1',
        [name],
      );
      const { run_id: heldBy, holder: where } = holder.rows[0] ?? { run_id: null, holder: null };
      throw new ConflictError(
        `job '${name}' is being run${where ? ` by ${where}` : ''}${heldBy ? ` (run ${heldBy})` : ''}; wait for it to finish`,
        { details: { runId: heldBy ?? undefined, holder: where ?? undefined } },
      );
    }
    await client.query('UPDATE replikit.job_locks SET run_id = $2, holder = $3, taken_at = now() WHERE name = $1', [
      name,
      runId,
      `${hostname()}:${process.pid}`,
    ]);
  } catch (error) {
    await client.end().catch(() => undefined);
    throw error;
  }
  let released = false;
  return async () => {
    if (released) return;
    released = true;
    try {
      await client.query('UPDATE replikit.job_locks SET run_id = NULL, holder = NULL WHERE name = $1 AND run_id = $2', [
        name,
        runId,
      ]);
      await client.query('SELECT pg_advisory_unlock($1, $2)', jobLockKey(lockId));
    } catch {
      // The lock's connection is gone (the server ended it, the network cut it): the lock ended
      // with it, which is what releasing wants. Ending the client below ends it in any case, so a
      // release never fails and never hides the run's own outcome.
    } finally {
      await client.end().catch(() => undefined);
    }
  };
}
