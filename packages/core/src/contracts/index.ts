export type {
  BackupDiskWriter,
  BackupSession,
  BackupSink,
  BackupVersionInfo,
  BackupVersionSpec,
} from './backup-sink.js';
export type { Capabilities } from './capabilities.js';
export type { ChangeTracker } from './change-tracker.js';
export type { DiskReader, DiskRef, DiskWriter, Extent, FileSpan, OperationOptions } from './disk.js';
export type {
  CloneInfo,
  CloneNetwork,
  CloneOptions,
  FailoverHooks,
  LiveDisk,
  ReplicaFailoverMark,
} from './failover.js';
export type {
  ClaimOptions,
  DiskPullResult,
  Hypervisor,
  PowerState,
  PullDiskFromOptions,
  PullSource,
  Replica,
  ReplicaDigestsFrom,
  ReplicaFingerprint,
  ReplicaOwner,
  ReplicaSpec,
  RestorePoint,
  RestorePointOptions,
  RevertOptions,
  Snapshot,
  TargetFence,
  VMInfo,
  VmExport,
  VmImportResult,
  WriterOptions,
} from './hypervisor.js';
export type {
  CacheExpectation,
  CacheKey,
  CacheOpenResult,
  CacheReader,
  CacheWriter,
  ReplicationCacheProvider,
} from './replication-cache.js';
export type {
  BlockChannel,
  BlockDigest,
  BlockOp,
  DeltaOp,
  DeltaSent,
  DiskChannel,
  SessionSpec,
  Transport,
} from './transport.js';
