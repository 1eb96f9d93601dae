export type { FailbackOptions, FailbackResult } from './failback.js';
export { FailoverEngine, type FailoverEngineOptions } from './failover-engine.js';
export type {
  FailoverKind,
  FailoverOperation,
  FailoverOutcome,
  FailoverRecord,
  HealthVerdict,
  ReplicaLifecycle,
} from './failover-record.js';
export { type FailoverStore, FileFailoverStore } from './failover-store.js';
export type { HealthCheckOptions } from './health-check.js';
export { listOrphans, type Orphan, type OrphanQuery } from './list-orphans.js';
export type { FailoverFaultHook } from './operation-context.js';
export type { PlannedFailoverOptions, PlannedFailoverResult } from './planned-failover.js';
export type { UnplannedFailoverOptions } from './promote-ops.js';
export type {
  ReverseDiskStats,
  ReverseOptions,
  ReversePassStats,
  ReverseResult,
} from './reverse-replication.js';
export type { TestFailoverOptions, TestFailoverResult } from './test-failover.js';
