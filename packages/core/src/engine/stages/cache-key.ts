import type { RunJournal } from '../run-journal.js';

/** The key of a disk's replication cache: the job, and the replica disk. */
export function cacheKeyOf(
  record: Pick<RunJournal, 'job'>,
  disk: { replicaDiskId: string },
): { job: string; diskId: string } {
  return { job: record.job.name, diskId: disk.replicaDiskId };
}
