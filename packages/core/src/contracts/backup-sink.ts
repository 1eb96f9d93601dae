import type { OperationOptions } from './disk.js';

/** What a single-pass run records: one backup version of the exact data it replicated. */
export interface BackupVersionSpec {
  /** The source VM's id. */
  vm: string;
  /** The run writing the version (a resumed run finds its pending version by it). */
  runId: string;
  blockSize: number;
  disks: Array<{ id: string; size: number }>;
  /**
   * The version the replica held before this run. Blocks the run does not put are taken from it
   * (they did not change); without a base they read as zero.
   */
  baseVersion?: string;
}

/** A committed backup version, as listed. */
export interface BackupVersionInfo {
  id: string;
  vm: string;
  runId: string;
  createdAt: string;
  disks: Array<{ id: string; size: number }>;
}

/** One disk of a backup being written. */
export interface BackupDiskWriter {
  /** Records block `index`: its bytes, or `null` for an all-zero block. */
  put(index: number, data: Uint8Array | null): Promise<void>;
}

/** A backup version being written by a run. */
export interface BackupSession {
  disk(id: string): BackupDiskWriter;
  /** Makes everything put so far durable (called at the run's checkpoints). */
  checkpoint(): Promise<void>;
  /** Makes everything durable and releases the session; the version stays pending. */
  close(): Promise<void>;
}

/**
 * Where single-pass runs record backup versions (`options.singlePass`). `@replikit/dedup`
 * supplies the content-addressed block store.
 */
export interface BackupSink {
  /**
   * Checks that runs can record versions here (an encrypted store's key, say), without writing
   * any version: a run calls it in `prepare`, before it snapshots the source or touches the replica.
   */
  check?(options?: OperationOptions): Promise<void>;
  /**
   * Whether a version of `spec` can take the blocks a run does not put from `spec.baseVersion`:
   * that version still exists, with the same block size and the same disks (ids and sizes). A run
   * plans every block to be read and put when it cannot (a deleted base, an edited block size).
   */
  canInherit?(spec: BackupVersionSpec & { baseVersion: string }, options?: OperationOptions): Promise<boolean>;
  /**
   * Starts, or after a crash continues, the pending version of `spec.runId`. A `baseVersion` it
   * cannot inherit from (see {@link BackupSink.canInherit}) is refused, never read as zeros.
   */
  begin(spec: BackupVersionSpec, options?: OperationOptions): Promise<BackupSession>;
  /** Commits the pending version of a run; returns it, or `undefined` when there is none. */
  commitPending(vm: string, runId: string): Promise<BackupVersionInfo | undefined>;
  /** Drops the pending version of a run, if any. */
  abortPending(vm: string, runId: string): Promise<void>;
}
