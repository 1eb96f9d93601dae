/**
 * `@replikit/core`: the contracts every driver implements, the job model, the rule validator and
 * the resumable run engine.
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
export {
  type BlockHasher,
  createNodeHasher,
  type HasherFactory,
  isZeroBlock,
  sameDigest,
} from './engine/block-hasher.js';
export { type BlockRange, countBlocks, toBlockRanges } from './engine/block-ranges.js';
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
export {
  type DiskRecord,
  emptyStats,
  type JobRecord,
  type PlanMode,
  type RunRecord,
  type TransferStats,
} from './engine/run-record.js';
export {
  assertTransition,
  canTransition,
  isTerminal,
  type RunOutcome,
  type RunState,
} from './engine/run-state.js';
export type { StateStore } from './engine/state-store.js';
export * from './errors.js';
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
export { BlockTarget, TargetDisk } from './transport/block-target.js';
export { FRAME_OVERHEAD_BYTES } from './transport/frame-size.js';
export { createInProcessTransport, type InProcessTransportOptions } from './transport/inprocess-transport.js';
export { fsyncDirectory, writeFileAtomic } from './util/atomic-file.js';
export { worthCompressing } from './util/compressibility.js';
export { isProcessAlive } from './util/process-alive.js';
export { checkRange } from './util/range.js';
export { formatBytes, parseRate, parseSize } from './util/sizes.js';
export { TokenBucket } from './util/token-bucket.js';
export { WARNING_CODES, type WarningCode } from './warnings.js';
