/**
 * `@replikit/core`: the contracts every driver implements, the job model, the rule validator and
 * the resumable run engine. (Helpers the replikit packages share live in `@replikit/core/internal`,
 * which is not public API.)
 *
 * @packageDocumentation
 */
export * from './contracts/index.js';
export * from './driver-kit/index.js';
export {
  type DriverContext,
  type DriverDefinition,
  type DriverDefinitionInit,
  defineDriver,
  isDriverDefinition,
  type JobSide,
  type NoOptions,
} from './drivers/define-driver.js';
export type { BlockHasher, HasherFactory } from './engine/block-hasher.js';
export {
  type CreateDriverOptions,
  DriverRegistry,
  defaultDriverRegistry,
  driverKinds,
  type RegisterDriverOptions,
  registerDriver,
} from './engine/driver-registry.js';
export type {
  DiskProgress,
  EngineEvents,
  PlanEvent,
  ProgressEvent,
  StateEvent,
  WarningEvent,
} from './engine/events.js';
export { FileStateStore } from './engine/file-state-store.js';
export { toJournal, toRunRecord } from './engine/journal-format.js';
export {
  type DiskFacts,
  type DiskPlan,
  PLAN_REASON_CODES,
  type PlanReason,
  type PlanReasonCode,
  type ReplicaChange,
} from './engine/plan/disk-plan.js';
export { ALWAYS_FULL_METHODS, planDisk } from './engine/plan/plan-disk.js';
export type { DiskForecast, RunBlocker, RunForecast } from './engine/plan/run-forecast.js';
export type { LeaseFence, LeaseOptions, ReplicaLease, SaveRunOptions } from './engine/replica-lease.js';
export {
  type EngineOptions,
  ReplicationEngine,
  type ResumeOptions,
  type RunOptions,
  type StartOptions,
} from './engine/run-engine.js';
export type {
  CleanupRecord,
  CommitRecord,
  PlanRecord,
  Prepared,
  PrepareRecord,
  PrepareStart,
  RunJournal,
  SnapshotRecord,
  StageRecords,
} from './engine/run-journal.js';
export type {
  DiskRecord,
  JobRecord,
  PlanMode,
  RunHeader,
  RunRecord,
  TransferStats,
} from './engine/run-record.js';
export { isTerminal, type RunOutcome, type RunState } from './engine/run-state.js';
export { isRunStopped, type StopReason } from './engine/run-stop.js';
export type { StateStore } from './engine/state-store.js';
export * from './errors.js';
export * from './failover/index.js';
export {
  type EndpointSpec,
  type JobOptions,
  type JobSpec,
  type JobSpecInput,
  jobSpecSchema,
  KNOWN_METHODS,
  replicaNameOf,
} from './job/job-spec.js';
export { type JobIssue, loadJobFile, parseJob } from './job/parse-job.js';
export * from './rules/index.js';
export * from './schedule/index.js';
export { formatBytes, parseRate, parseSize } from './util/sizes.js';
export { WARNING_CODES, type WarningCode } from './warnings.js';
