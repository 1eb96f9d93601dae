/**
 * `@replikit/store-postgres`: replikit's state store on PostgreSQL, shared by many workers, with
 * replica leases whose epochs fence every journal write.
 *
 * @packageDocumentation
 */

export {
  ClusterWorker,
  type ClusterWorkerOptions,
  SCHEDULER_LEASE,
  type SchedulerChange,
} from './cluster/cluster-worker.js';
export { QueueEngine } from './cluster/queue-engine.js';
export {
  checkRunLimits,
  endpointKey,
  type LimitScope,
  type LimitWant,
  limitWantsOf,
  type RunLimits,
} from './cluster/run-limits.js';
export {
  openRunQueue,
  type ResumeRequest,
  RUN_QUEUE,
  type RunAnswer,
  type RunAnswerError,
  type RunQueueOptions,
  type RunRequest,
  type StartRequest,
} from './cluster/run-queue.js';
export { type RunningRun, RunWorker, type WorkerCounters } from './cluster/run-worker.js';
export { listWorkers, type WorkerRow } from './cluster/workers.js';
export type { MigrationResult } from './migrate.js';
export { SCHEMA_VERSION } from './migrations/index.js';
export { PostgresFailoverStore } from './postgres-failover-store.js';
export { PostgresStateStore, type PostgresStoreOptions } from './postgres-state-store.js';
