import type { Context } from '@opentelemetry/api';
import type { Hypervisor } from '../../contracts/hypervisor.js';
import type { WarningCode } from '../../warnings.js';
import type { ProgressReporter } from '../progress-reporter.js';
import type { RunDependencies } from '../run-dependencies.js';
import type { RunJournal } from '../run-journal.js';
import type { JobRecord } from '../run-record.js';
import type { RunState } from '../run-state.js';

/**
 * What a stage of a run may use: the run's journal, the engine's dependencies, and the run's
 * shared services (its drivers, the job's history, journaling, warnings, progress). The execution
 * that drives the run supplies it.
 */
export interface RunContext {
  /** The run's journal; a stage writes its own part of it (`record.stages.<stage>`). */
  readonly record: RunJournal;
  readonly deps: RunDependencies;
  /**
   * Aborts the run's work: the user's cancel (the run is rolled back), or the hard end of a stop
   * whose grace ran out (the run is left as a crash would leave it).
   */
  readonly signal: AbortSignal;
  /**
   * Asks the run to stop at its next checkpoint and stay unfinished (`RunOptions.suspend`): a push
   * transfer journals how far each disk got and throws `runStoppedError`; the stages check it between
   * them.
   */
  readonly suspend?: AbortSignal;
  /** Throttled progress events of the transfer. */
  readonly progress: ProgressReporter;
  /** The OpenTelemetry context the run's spans are children of (see `RunOptions.traceContext`). */
  readonly traceContext?: Context;
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
 * How a run that does not complete ends: `rollback` undoes its own writes (the replica returns to
 * the restore point it started from), `abandon` drops only what is pending and reverts nothing.
 */
export type Ending = 'rollback' | 'abandon';

/**
 * One step of a run. `run` runs in the run's state `state` and must be safe to run again after a
 * crash (it finds what it journaled before doing what depends on it). `undo` is called by the
 * `cleanup` stage, in reverse order, for each stage that ran (see `ran`) when the run does not
 * complete; it too must be safe to call again.
 */
export interface Stage {
  /** The run state the stage runs in. */
  readonly state: RunState;
  run(context: RunContext): Promise<void>;
  /** True when the journal says the stage did something `undo` must take back. */
  ran?(context: RunContext): boolean;
  /** Takes back what the stage did, for a run that ends without completing. */
  undo?(context: RunContext, ending: Ending): Promise<void>;
  /**
   * Called once before a run resumed after this stage goes on (a new process, after a crash):
   * takes again what the stage held (the replica's hold), or refuses to go on.
   */
  resume?(context: RunContext): Promise<void>;
}
