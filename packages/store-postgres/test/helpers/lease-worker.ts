// A worker process for the fencing tests: takes the lease on replica `argv[3]` of the store at
// `argv[2]` with a TTL of `argv[4]` ms, then, every tenth of the TTL, writes its run's journal
// under the lease and renews it. It prints one JSON line per event on stdout (`leased`, `wrote`,
// `refused`) and exits once a write is refused; after a refused heartbeat it still tries one
// write, as a careless worker would.
import { isReplikitError } from '@replikit/core';
import { PostgresStateStore } from '../../src/index.js';
import { journalOf } from './journal-of.js';

const [url, replica, ttl] = process.argv.slice(2);
if (!url || !replica || !ttl) throw new Error('usage: lease-worker <url> <replica> <ttlMs>');
const ttlMs = Number(ttl);
const say = (event: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(event)}\n`);

const store = await PostgresStateStore.open({ connectionString: url });
const lease = await store.leaseReplica(replica, { ttlMs, owner: `lease-worker:${process.pid}` });
say({ event: 'leased', epoch: lease.epoch });
const run = journalOf(`${replica}-run`, replica, 'transfer');
let step = 0;
const write = () => store.saveRun({ ...run, updatedAt: `step ${step}` }, { fence: { replica, epoch: lease.epoch } });
const codeOf = (error: unknown) => (isReplikitError(error) ? error.code : String(error));
try {
  for (;;) {
    step++;
    try {
      await write();
    } catch (error) {
      say({ event: 'refused', what: 'write', step, code: codeOf(error) });
      break;
    }
    say({ event: 'wrote', step });
    try {
      await lease.heartbeat();
    } catch (error) {
      // A careless worker that writes on after losing its lease: the store must refuse it.
      say({ event: 'refused', what: 'heartbeat', step, code: codeOf(error) });
      step++;
      await write().then(
        () => say({ event: 'wrote', step }),
        (late: unknown) => say({ event: 'refused', what: 'write', step, code: codeOf(late) }),
      );
      break;
    }
    await new Promise((resolve) => setTimeout(resolve, Math.max(1, Math.floor(ttlMs / 10))));
  }
} finally {
  await store.close();
}
