import { isReplikitError } from '@replikit/core';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PostgresStateStore } from '../src/index.js';
import { startTestPostgres, type TestPostgres } from '../src/testing/index.js';
import { journalOf } from './helpers/journal-of.js';

let server: TestPostgres;
beforeAll(async () => {
  server = await startTestPostgres();
});
afterAll(async () => {
  await server?.stop();
});

describe('a fenced write racing a takeover of its lease', () => {
  it('waits for the takeover to commit, then is refused: no write of the old epoch lands after it', async () => {
    const url = await server.createDatabase();
    const store = await PostgresStateStore.open({ connectionString: url });
    const taker = new pg.Client({ connectionString: url });
    await taker.connect();
    try {
      const lease = await store.leaseReplica('raced', { ttlMs: 60_000 });
      const run = journalOf('raced-1', 'raced', 'transfer');
      await store.saveRun(run, { fence: { replica: 'raced', epoch: lease.epoch } });
      // Another worker's takeover, caught in the middle: its new epoch is written, not committed.
      await taker.query('BEGIN');
      await taker.query(
        `UPDATE replikit.replica_leases SET epoch = nextval('replikit.lease_epochs'), owner = 'taker'
         WHERE replica = 'raced'`,
      );
      const late = store.saveRun({ ...run, state: 'commit' }, { fence: { replica: 'raced', epoch: lease.epoch } });
      const settled = late.then(
        () => 'written',
        (error: unknown) => (isReplikitError(error, 'E_LEASE_LOST') ? 'E_LEASE_LOST' : String(error)),
      );
      // The write waits on the lease row; wait for the event (PostgreSQL shows the wait) before committing.
      const watcher = new pg.Client({ connectionString: url });
      await watcher.connect();
      try {
        for (;;) {
          const waits = await watcher.query(
            `SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%current_lease%'`,
          );
          if (waits.rowCount) break;
          if ((await Promise.race([settled, Promise.resolve('pending')])) !== 'pending') break;
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
      } finally {
        await watcher.end();
      }
      await taker.query('COMMIT');
      expect(await settled).toBe('E_LEASE_LOST');
      expect((await store.loadRun('raced-1'))?.state).toBe('transfer');
    } finally {
      await taker.end();
      await store.close();
    }
  });
});
