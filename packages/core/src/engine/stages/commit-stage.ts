import { cacheKeyOf } from './plan-stage.js';
import type { RunContext, Stage } from './stage.js';

/**
 * `commit`: the replica's new restore point (journaled at once), the replica marked ready, the new
 * replication caches and backup version committed against its new fingerprint, and the job's
 * record moved on (base snapshot, fingerprint, last run).
 */
export const commitStage: Stage = {
  state: 'commit',
  async run(context: RunContext): Promise<void> {
    const { record, deps, signal } = context;
    const { target } = await context.drivers();
    const replica = record.replica!;
    record.restorePoint = await target.createRestorePoint(replica, record.runId, {
      retention: record.job.options.retention,
      signal,
    });
    await context.save();
    await target.markReplica(replica, 'ready', { signal });
    const fingerprint = await target.replicaState(replica, { signal });
    for (const disk of record.disks) {
      if (disk.writesCache && deps.cache) {
        await deps.cache.commitPending(cacheKeyOf(record, disk), record.runId, fingerprint.value);
      }
    }
    if (record.backup && deps.backup) {
      const version = await deps.backup.commitPending(record.snapshot!.vmId, record.runId);
      if (version) record.backup.version = version.id;
      else
        context.warn(
          'W_BACKUP_LOST',
          `the backup version of run ${record.runId} was lost; the next single-pass run records a full one`,
        );
    }
    const previous = await context.jobHistory();
    await deps.store.saveJob({
      ...previous,
      name: record.job.name,
      method: record.job.method,
      lastRunId: record.runId,
      lastCompletedRunId: record.runId,
      baseSnapshot: record.snapshot!,
      replica: { ...replica, created: false },
      replicaFingerprint: fingerprint.value,
      ...(fingerprint.details ? { replicaFingerprintDetails: fingerprint.details } : {}),
      ...(record.backup ? { lastBackupVersion: record.backup.version } : {}),
      updatedAt: new Date().toISOString(),
    });
  },
};
