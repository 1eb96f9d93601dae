import type { ScheduleRequest, ScheduleState } from '../schedule/schedule-state.js';
import type { LeaseOptions, ReplicaLease, SaveRunOptions } from './replica-lease.js';
import type { RunJournal } from './run-journal.js';
import type { JobRecord } from './run-record.js';
import { isTerminal } from './run-state.js';

/**
 * Where runs are journaled and jobs remember their last run. The engine saves a run's record at
 * every transition and durable checkpoint, so a store must make each `saveRun` atomic and durable.
 * The default is {@link FileStateStore} (one machine); `@replikit/store-postgres` shares one store
 * between many workers and adds replica leases with fencing ({@link leaseReplica}).
 */
export interface StateStore {
  /**
   * Where the store is (a folder, a URL), named in the owner record a run puts on its replica
   * and in messages that tell how to resume a run. Optional.
   */
  readonly location?: string;
  /**
   * Saves (replaces) a run's journal, atomically and durably. With `options.fence`, a store that
   * has {@link leaseReplica} writes only while that lease is current, and rejects with
   * `E_LEASE_LOST` otherwise; a store without leases ignores the fence.
   */
  saveRun(record: RunJournal, options?: SaveRunOptions): Promise<void>;
  /**
   * Loads a run's journal, or `undefined` when there is none. A journal an earlier version saved
   * (a flat version 1 record) may be returned as it is: the engine reads it through `toJournal`.
   */
  loadRun(runId: string): Promise<RunJournal | undefined>;
  /** Every run's journal, oldest first. */
  listRuns(): Promise<RunJournal[]>;
  /**
   * The oldest run of job `name` whose state is not terminal, or `undefined`. Optional: without
   * it the engine looks through {@link listRuns}; a store with many runs answers it from an index.
   */
  findUnfinished?(name: string): Promise<RunJournal | undefined>;
  /**
   * Saves what the store keeps of a job. With `options.fence` (a run's commit writes the job's
   * record under its lease), a store with leases writes only while that lease is current and
   * rejects with `E_LEASE_LOST` otherwise; a store without leases ignores it.
   */
  saveJob(record: JobRecord, options?: SaveRunOptions): Promise<void>;
  /** Loads a job's record, or `undefined` before its first run. */
  loadJob(name: string): Promise<JobRecord | undefined>;
  /**
   * Takes the lock of a job for this process; resolves to a release function. Rejects with
   * `E_CONFLICT` when a live process holds it. A lock left by a dead process is taken over.
   */
  lockJob(name: string, runId: string): Promise<() => Promise<void>>;
  /**
   * Saves (replaces) a job's schedule state, atomically and durably. Optional: the daemon needs it
   * (and {@link loadSchedule}, {@link listSchedules}); single runs do not.
   */
  saveSchedule?(state: ScheduleState): Promise<void>;
  /** Loads a job's schedule state, or `undefined` before the daemon first scheduled it. */
  loadSchedule?(name: string): Promise<ScheduleState | undefined>;
  /** Every job's schedule state, by job name. */
  listSchedules?(): Promise<ScheduleState[]>;
  /**
   * Saves (replaces) the pause or resume asked for a job, atomically: what `replikit daemon
   * pause|resume` writes and a running daemon polls. Optional, with {@link loadScheduleRequest}.
   */
  saveScheduleRequest?(request: ScheduleRequest): Promise<void>;
  /** The pause or resume last asked for a job, or `undefined`. */
  loadScheduleRequest?(name: string): Promise<ScheduleRequest | undefined>;
  /**
   * Takes the lease on `replica` for this worker, with a new epoch (a fencing token greater than
   * every earlier one of the replica). Rejects with `E_CONFLICT` while another worker's lease is
   * unexpired. Optional: a store shared by several machines has it; the file store, used by one
   * machine whose job locks already exclude other processes, does not.
   */
  leaseReplica?(replica: string, options: LeaseOptions): Promise<ReplicaLease>;
}

/** The oldest unfinished run of job `name` in `store`: from its index when it has one, else from every record. */
export async function findUnfinished(store: StateStore, name: string): Promise<RunJournal | undefined> {
  if (store.findUnfinished) return store.findUnfinished(name);
  return (await store.listRuns()).find((r) => r.job.name === name && !isTerminal(r.state));
}
