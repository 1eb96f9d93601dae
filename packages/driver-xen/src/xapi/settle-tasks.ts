import { sleep } from './backoff.js';
import type { XenConnection } from './xen-connection.js';

/** How long {@link settleTasks} waits at most: a snapshot task takes seconds on a real pool. */
const MOST_MS = 120_000;

/**
 * Waits until no task named `Async.<method>` is pending on the pool (or `MOST_MS` passed).
 *
 * A process killed while its `Async.VM.snapshot` runs does not stop the task: the pool finishes it
 * and the snapshot appears a moment later. A resume or rollback that looked for the run's snapshot
 * before then would miss it, take a second one or leave it behind; it waits for such tasks first.
 * Tasks of other clients are waited for too (XAPI does not say which VM a task is about); they
 * end as quickly.
 */
export async function settleTasks(connection: XenConnection, method: string, signal?: AbortSignal): Promise<void> {
  const name = `Async.${method}`;
  const until = Date.now() + MOST_MS;
  for (let delay = 50; Date.now() < until; delay = Math.min(delay * 2, 1000)) {
    const tasks = await connection.call<Record<string, { name_label?: string; status?: string }>>(
      'task.get_all_records',
      [],
      signal ? { signal } : {},
    );
    if (!Object.values(tasks).some((t) => t.name_label === name && t.status === 'pending')) return;
    await sleep(delay, signal);
  }
}
