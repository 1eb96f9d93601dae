// Workers that start together on a new database each open the run queue: pg-boss's createQueue
// (a row, a partition table and a foreign key in one transaction) deadlocks when two sessions
// create the same queue at once, which made a worker exit at start ("deadlock detected").
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openRunQueue } from '../src/cluster/run-queue.js';
import { startTestPostgres, type TestPostgres } from '../src/testing/index.js';

let server: TestPostgres;
beforeAll(async () => {
  server = await startTestPostgres();
});
afterAll(async () => {
  await server?.stop();
});

describe('openRunQueue', () => {
  it('workers opening the queue of a new database at once all start', async () => {
    for (let round = 0; round < 5; round++) {
      const url = await server.createDatabase();
      const opened = await Promise.allSettled([0, 1, 2, 3].map(() => openRunQueue({ connectionString: url })));
      for (const result of opened) {
        if (result.status === 'fulfilled') await result.value.stop({ graceful: false, wait: true });
      }
      const failures = opened.flatMap((r) => (r.status === 'rejected' ? [String(r.reason)] : []));
      expect(failures, `round ${round}`).toEqual([]);
    }
  }, 60_000);
});
