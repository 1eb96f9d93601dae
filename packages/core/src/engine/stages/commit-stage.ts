import { plannedOf, preparedOf, snapshotOf } from '../run-journal.js';
import { cacheKeyOf } from './cache-key.js';
import { fenced } from './fence-option.js';
import type { RunContext, Stage } from './stage.js';

/**
 * `commit`: the replica's new restore point (journaled at once), the replica marked ready, the new
 * replication caches and backup version committed against its new fingerprint, and the job's
 * record moved on (base snapshot, fingerprint, last run). A commit that stops half-way is undone
 * with the replica's writes (the `plan` stage's undo knows the run's own restore point).
 */
export const commitStage: Stage = {
  state: 'commit',
  async run(ctx: RunContext): Promise<void> {
    const { record, deps, signal } = ctx;
    const { target } = await ctx.drivers();
    const { replica } = preparedOf(record);
    const snapshot = snapshotOf(record);
    const plan = plannedOf(record);
    // Under a lease, the commit is made only while it is still this worker's (E_LEASE_LOST
    // otherwise). The renewal checks it now; a fencing target checks the epoch again atomically
    // with the commit, which closes the window between the two (a worker paused right here).
    await deps.lease?.heartbeat();
    const restorePoint = await target.createRestorePoint(replica, record.runId, {
      retention: record.job.options.retention,
      signal,
      ...fenced(ctx),
    });
    record.stages.commit = { restorePoint };
    await ctx.save();
    await target.markReplica(replica, 'ready', { signal });
    const fingerprint = await target.replicaState(replica, { signal });
    for (const disk of record.disks) {
      if (disk.writesCache && deps.cache) {
        await deps.cache.commitPending(cacheKeyOf(record, disk), record.runId, fingerprint.value);
      }
    }
    if (plan.backup && deps.backup) {
      const version = await deps.backup.commitPending(snapshot.vmId, record.runId);
      if (version) record.stages.commit.backupVersion = version.id;
      else
        ctx.warn(
          'W_BACKUP_LOST',
          `the backup version of run ${record.runId} was lost; the next single-pass run records a full one`,
        );
    }
    const previous = await ctx.jobHistory();
    await deps.store.saveJob(
      {
        ...previous,
        name: record.job.name,
        method: record.job.method,
        lastRunId: record.runId,
        lastCompletedRunId: record.runId,
        baseSnapshot: snapshot,
        replica: { ...replica, created: false },
        replicaFingerprint: fingerprint.value,
        ...(fingerprint.details ? { replicaFingerprintDetails: fingerprint.details } : {}),
        ...(plan.backup ? { lastBackupVersion: record.stages.commit.backupVersion } : {}),
        updatedAt: new Date().toISOString(),
      },
      deps.saveOptions,
    );
  },
};
