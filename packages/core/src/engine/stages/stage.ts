import type { Hypervisor } from '../../contracts/hypervisor.js';
import type { WarningCode } from '../../warnings.js';
import type { RunDependencies } from '../run-execution.js';
import type { JobRecord, RunRecord } from '../run-record.js';
import type { RunState } from '../run-state.js';

/**
 * What a stage of a run may use: the run's journal, the engine's dependencies, and the run's
 * shared services (its drivers, the job's history, journaling, warnings). The execution that
 * drives the run supplies it.
 */
export interface RunContext {
  /** The run's journal; a stage writes its own part of it. */
  readonly record: RunRecord;
  readonly deps: RunDependencies;
  /** Aborts the run. */
  readonly signal: AbortSignal;
  /** The run's source and target drivers, created once per execution. */
  drivers(): Promise<{ source: Hypervisor; target: Hypervisor }>;
  /** What the store keeps of the job, read once per execution. */
  jobHistory(): Promise<JobRecord | undefined>;
  /** Journals the record (saves are serialized). */
  save(): Promise<void>;
  /** Records a warning in the journal and emits it. */
  warn(code: WarningCode, message: string): void;
}

/**
 * One step of a run: it runs in the run's state `state` and must be safe to run again after a
 * crash (it finds what it journaled before doing what depends on it).
 */
export interface Stage {
  /** The run state the stage runs in. */
  readonly state: RunState;
  run(context: RunContext): Promise<void>;
}
