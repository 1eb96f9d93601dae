import { StateError } from '../errors.js';
import type { RunJournal, StageRecords } from './run-journal.js';
import type { RunRecord } from './run-record.js';

/** The fields of a run that are the same in a journal and in its flat record. */
type Header = Omit<RunJournal, 'version' | 'stages'>;

function headerOf(run: RunJournal | RunRecord): Header {
  return {
    runId: run.runId,
    job: run.job,
    state: run.state,
    ...(run.outcome ? { outcome: run.outcome } : {}),
    ...(run.error ? { error: run.error } : {}),
    ...(run.cleanupError ? { cleanupError: run.cleanupError } : {}),
    startedAt: run.startedAt,
    updatedAt: run.updatedAt,
    ...(run.finishedAt ? { finishedAt: run.finishedAt } : {}),
    pid: run.pid,
    ...(run.host !== undefined ? { host: run.host } : {}),
    ...(run.stopped ? { stopped: run.stopped } : {}),
    history: run.history,
    ...(run.forced ? { forced: true } : {}),
    blockSize: run.blockSize,
    digest: run.digest,
    disks: run.disks,
    stats: run.stats,
    warnings: run.warnings,
  };
}

/** The stage parts of a flat (version 1) record, as the stages of this version journal them. */
function stagesOfFlat(record: RunRecord): StageRecords {
  const stages: StageRecords = {};
  if (record.replica) {
    const created = record.replicaCreated ?? record.replica.created;
    stages.prepare = { replica: { ...record.replica, created } };
    if (record.restorePointBefore !== undefined) {
      stages.prepare.start = {
        restorePointBefore: record.restorePointBefore,
        ...(record.baseSnapshot ? { baseSnapshot: record.baseSnapshot } : {}),
        ...(record.replicaModified ? { replicaChange: record.replicaChange ?? 'changed' } : {}),
      };
    }
  }
  if (record.snapshot) stages.snapshot = { snapshot: record.snapshot };
  if (record.replicaTouched) {
    stages.plan = {
      ...(record.replicaFingerprintAtPlan ? { replicaFingerprint: record.replicaFingerprintAtPlan } : {}),
      ...(record.backup ? { backup: record.backup.baseVersion ? { baseVersion: record.backup.baseVersion } : {} } : {}),
    };
  }
  if (record.restorePoint) {
    stages.commit = {
      restorePoint: record.restorePoint,
      ...(record.backup?.version ? { backupVersion: record.backup.version } : {}),
    };
  }
  if (record.rolledBack || record.abandoned) {
    stages.cleanup = {
      ...(record.rolledBack ? { rolledBack: true } : {}),
      ...(record.abandoned ? { abandoned: true } : {}),
    };
  }
  return stages;
}

/**
 * A stored run as a journal of this version: a version 2 journal as it is, a flat version 1
 * record (journaled by earlier versions) with its fields moved into the stages' parts, so that it
 * resumes where it stopped.
 *
 * @throws {@link StateError} (`E_STATE`) for a journal of an unknown version.
 */
export function toJournal(stored: RunJournal | RunRecord): RunJournal {
  if (stored.version === 2) return { ...stored, stages: stored.stages ?? {} };
  if (stored.version !== 1) {
    throw new StateError(
      `run ${(stored as { runId?: string }).runId} was journaled by an unknown version (${(stored as { version: unknown }).version})`,
    );
  }
  return { version: 2, ...headerOf(stored), stages: stagesOfFlat(stored) };
}

/**
 * A run as the flat {@link RunRecord} the engine returns and `replikit runs --json` prints: the
 * fields of earlier versions, taken from the stages' parts.
 */
export function toRunRecord(stored: RunJournal | RunRecord): RunRecord {
  const journal = toJournal(stored);
  const { prepare, snapshot, plan, commit, cleanup } = journal.stages;
  const start = prepare?.start;
  const backup = plan?.backup
    ? { ...plan.backup, ...(commit?.backupVersion ? { version: commit.backupVersion } : {}) }
    : undefined;
  return {
    version: 1,
    ...headerOf(journal),
    ...(snapshot ? { snapshot: snapshot.snapshot } : {}),
    ...(start?.baseSnapshot ? { baseSnapshot: start.baseSnapshot } : {}),
    ...(prepare ? { replica: prepare.replica, replicaCreated: prepare.replica.created } : {}),
    ...(start ? { restorePointBefore: start.restorePointBefore } : {}),
    ...(commit ? { restorePoint: commit.restorePoint } : {}),
    ...(plan ? { replicaTouched: true } : {}),
    ...(plan?.replicaFingerprint ? { replicaFingerprintAtPlan: plan.replicaFingerprint } : {}),
    ...(start?.replicaChange ? { replicaModified: true, replicaChange: start.replicaChange } : {}),
    ...(backup ? { backup } : {}),
    ...(cleanup?.rolledBack ? { rolledBack: true } : {}),
    ...(cleanup?.abandoned ? { abandoned: true } : {}),
    stages: journal.stages,
  };
}
