import type { RestorePoint } from '../contracts/hypervisor.js';

/**
 * Where a job's replica is in its life:
 * - `ready`: replicating (runs write it);
 * - `failed-over`: promoted and started at {@link FailoverRecord.point}; undo possible;
 * - `committed`: failed over for good; runs stay refused;
 * - `retired`: permanent failover: the replica is the production VM and the job never runs again.
 */
export type ReplicaLifecycle = 'ready' | 'failed-over' | 'committed' | 'retired';

/** The failover operations. */
export type FailoverKind = 'test' | 'unplanned' | 'planned' | 'undo' | 'commit' | 'permanent' | 'reverse' | 'failback';

/** An operation that started and has not ended: what a resume continues. Plain data. */
export interface FailoverOperation {
  /** Unique id (`<kind>-<job>-<time>-<hex>`). */
  id: string;
  /** Which operation. */
  kind: FailoverKind;
  /** ISO 8601 start time. */
  startedAt: string;
  /** The options it was started with (a resume uses them again). */
  options: Record<string, unknown>;
  /** The steps done so far and what each one journaled, by step name. */
  done: Record<string, unknown>;
}

/** The verdict of a test failover's health check. */
export interface HealthVerdict {
  /** True when the clone started and every check passed. */
  passed: boolean;
  /** The clone started (it reported `running`). */
  started: boolean;
  /** What failed, when `passed` is false. */
  reason?: string;
  /** The user command's outcome, when one ran. */
  command?: { exitCode: number | null; signal: string | null; output: string };
}

/** One ended operation. */
export interface FailoverOutcome {
  /** The operation's id. */
  id: string;
  /** Which operation. */
  kind: FailoverKind;
  /** ISO 8601 start and end times. */
  startedAt: string;
  endedAt: string;
  /** `succeeded`, or `refused` when a precondition stopped it before it changed anything. */
  outcome: 'succeeded' | 'refused';
  /** The restore point it worked on. */
  pointId?: string;
  /** A test failover's verdict. */
  verdict?: HealthVerdict;
  /** Why it was refused. */
  error?: { code: string; message: string };
  /** Blocks and bytes a reverse replication or a failback sent onto the original VM (all passes). */
  sent?: { blocks: number; bytes: number; blockSize: number };
}

/** Everything the failover engine keeps about a job: its lifecycle state and its operations. */
export interface FailoverRecord {
  /** Format version: 1. */
  version: 1;
  /** The job's name. */
  job: string;
  /** See {@link ReplicaLifecycle}. */
  state: ReplicaLifecycle;
  /** The restore point the replica was failed over at (not `ready`). */
  point?: RestorePoint;
  /** The operation under way, journaled step by step. */
  operation?: FailoverOperation;
  /** The last ended operations, oldest first (at most 50). */
  history: FailoverOutcome[];
  /** ISO 8601 time of the last change. */
  updatedAt: string;
}

/** A fresh record of a job that was never failed over. */
export function freshFailoverRecord(job: string): FailoverRecord {
  return { version: 1, job, state: 'ready', history: [], updatedAt: new Date().toISOString() };
}
