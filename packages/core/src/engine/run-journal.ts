import type { Replica, RestorePoint, Snapshot } from '../contracts/hypervisor.js';
import { StateError } from '../errors.js';
import type { ReplicaChange } from './plan/disk-plan.js';
import type { RunHeader } from './run-record.js';

/** What `prepare` journals: the replica it found or created and held, and where the run starts from. */
export interface PrepareRecord {
  /** The replica; `created` is true when this run created it. */
  replica: Replica;
  /**
   * The run's starting point, journaled once per run (absent only while `prepare` has not finished
   * its first pass).
   */
  start?: PrepareStart;
}

/** Where a run starts from: read once, on its first pass through `prepare`. */
export interface PrepareStart {
  /** The restore point a rollback returns to (`null`: the replica had none). */
  restorePointBefore: RestorePoint | null;
  /** The previous run's snapshot, kept as base until this run commits. */
  baseSnapshot?: Snapshot;
  /** Set when the replica changed outside replikit since the last run: how. */
  replicaChange?: ReplicaChange;
}

/** What `snapshot` journals: the source snapshot this run took. */
export interface SnapshotRecord {
  snapshot: Snapshot;
}

/** What `plan` journals besides the disks' plans; present once the replica may be written. */
export interface PlanRecord {
  /** The replica's fingerprint when the run planned (what a trusted cache must match). */
  replicaFingerprint?: string;
  /** The single-pass backup version this run records (`options.singlePass`), and its base. */
  backup?: { baseVersion?: string };
}

/** What `commit` journals. */
export interface CommitRecord {
  /** The restore point this run committed. */
  restorePoint: RestorePoint;
  /** The backup version committed (single-pass runs). */
  backupVersion?: string;
}

/** How a run that did not complete ended in `cleanup`. */
export interface CleanupRecord {
  /** The run's own writes were rolled back. */
  rolledBack?: boolean;
  /** The run was abandoned (`replikit resume <id> --abandon`): ended without a rollback. */
  abandoned?: boolean;
}

/** Each stage's own part of the journal; a part is present once its stage journaled it. */
export interface StageRecords {
  prepare?: PrepareRecord;
  snapshot?: SnapshotRecord;
  plan?: PlanRecord;
  commit?: CommitRecord;
  cleanup?: CleanupRecord;
}

/**
 * The journal of one run, as the state store keeps it (version 2): the run's header and progress,
 * and each stage's typed part under `stages`. Saved at every transition and durable checkpoint.
 * Journals of version 1 (one flat record) are read through {@link toJournal}; what the engine
 * returns and `replikit runs --json` prints is the flat {@link RunRecord} ({@link toRunRecord}).
 */
export interface RunJournal extends RunHeader {
  /** Journal format version. */
  version: 2;
  /** Each stage's part. */
  stages: StageRecords;
}

/** The parts a stage after `prepare` relies on: the replica and the run's starting point. */
export interface Prepared {
  replica: Replica;
  start: PrepareStart;
}

/**
 * The journal's `prepare` part, complete.
 *
 * @throws {@link StateError} when `prepare` has not journaled it (a damaged or hand-edited journal).
 */
export function preparedOf(journal: RunJournal): Prepared {
  const part = journal.stages.prepare;
  if (!part?.start) throw missing(journal, 'prepare');
  return { replica: part.replica, start: part.start };
}

/**
 * The snapshot this run took.
 *
 * @throws {@link StateError} when `snapshot` has not journaled it.
 */
export function snapshotOf(journal: RunJournal): Snapshot {
  const part = journal.stages.snapshot;
  if (!part) throw missing(journal, 'snapshot');
  return part.snapshot;
}

/**
 * The journal's `plan` part.
 *
 * @throws {@link StateError} when `plan` has not journaled it.
 */
export function plannedOf(journal: RunJournal): PlanRecord {
  const part = journal.stages.plan;
  if (!part) throw missing(journal, 'plan');
  return part;
}

function missing(journal: RunJournal, stage: string): StateError {
  return new StateError(
    `run ${journal.runId} is in '${journal.state}' but its journal has no '${stage}' part; the journal is damaged: end the run with \`replikit resume ${journal.runId} --abandon\``,
    { details: { runId: journal.runId } },
  );
}
