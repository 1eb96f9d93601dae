import type { OperationOptions } from './disk.js';
import type { BlockDigest } from './transport.js';

/** Identifies one replication cache: one per (job, replica disk). */
export interface CacheKey {
  /** The job's name. */
  job: string;
  /** The replica disk's id. */
  diskId: string;
}

/** What a cache must match to be trusted. */
export interface CacheExpectation {
  blockSize: number;
  blockCount: number;
  /** Digest algorithm name (`xxh128`, `sha256`, `blake3`). */
  digest: string;
  /** The replica's fingerprint now; the cache records the one it had after the last commit. */
  fingerprint: string;
}

/** The outcome of {@link ReplicationCacheProvider.open}. */
export type CacheOpenResult =
  | { status: 'ok'; reader: CacheReader }
  | { status: 'missing' }
  /** Corrupt, truncated, foreign, or of a replica that changed: never trusted. */
  | { status: 'invalid'; reason: string };

/** Reads a trusted cache: the digest of every replica block as last written. */
export interface CacheReader {
  /** Digests from `fromBlock` to the end, in order, read page by page (bounded memory). */
  digests(fromBlock: number, options?: OperationOptions): AsyncIterable<BlockDigest>;
  /**
   * Optional: the digest of one block (`null`: all zeros), read at random. With
   * {@link CacheWriter.carry}, lets a run that reads only tracked blocks skip the rest of the cache.
   */
  digestAt?(index: number, options?: OperationOptions): Promise<Uint8Array | null>;
  /**
   * Optional: copies the digests of blocks `[index, index + count)` into `target`, back to back
   * (the cache's digest length each; all zero bytes for an all-zero block). With
   * {@link CacheWriter.appendEntries}, lets a scan compare a whole segment per call instead of
   * a block per call.
   */
  copyEntries?(target: Uint8Array, index: number, count: number): Promise<void>;
  close(): Promise<void>;
}

/**
 * Writes the cache a run leaves behind: the digest of every block of the source snapshot (which
 * the replica equals once the run commits), appended in block order. The new cache stays pending
 * until {@link ReplicationCacheProvider.commitPending} seals it with the replica's fingerprint after
 * the run's commit.
 */
export interface CacheWriter {
  /** The block the writer continues from: the run's checkpoint, or 0 when the pending file was lost. */
  readonly resumedFrom: number;
  /** Records block `index`'s digest (`null`: all zeros). Blocks skipped since the last call are all zeros. */
  append(index: number, digest: Uint8Array | null): Promise<void>;
  /**
   * Optional: records the entries `[fromBlock, toBlock)` as `source` (a trusted cache of the same
   * disk, opened from the same provider) holds them, in bulk; same ordering rules as `append`.
   * Resolves `false`, having recorded nothing, when `source` is not one it can copy from.
   */
  carry?(source: CacheReader, fromBlock: number, toBlock: number): Promise<boolean>;
  /**
   * Optional: records the digests of blocks `[index, index + n)` given back to back in `entries`
   * (`n` = its length over the digest length; all zero bytes for an all-zero block); same
   * ordering rules as `append`.
   */
  appendEntries?(index: number, entries: Uint8Array): Promise<void>;
  /** Makes everything appended below `blockCount` durable (called at the run's checkpoints). */
  checkpoint(blockCount: number): Promise<void>;
  /** Flushes and closes the writer; the pending cache stays for commit or abort. */
  close(): Promise<void>;
}

/**
 * Where replication caches live. `@replikit/dedup` supplies the file-based one; the engine uses a
 * provider when a job sets `options.replicationCache`.
 */
export interface ReplicationCacheProvider {
  /** Opens the cache of `key` if it exists and matches `expect` exactly. */
  open(key: CacheKey, expect: CacheExpectation, options?: OperationOptions): Promise<CacheOpenResult>;
  /**
   * Starts (or, after a crash, continues) the new cache a run writes. `runId` names it so a
   * resumed run finds its own; `resumeFrom` is the run's checkpoint: entries past it are dropped.
   */
  begin(
    key: CacheKey,
    meta: { runId: string; blockSize: number; blockCount: number; digest: string },
    resumeFrom: number,
  ): Promise<CacheWriter>;
  /** Completes a run's new cache after a crash during commit, if it still exists. */
  commitPending(key: CacheKey, runId: string, fingerprint: string): Promise<boolean>;
  /** Drops a run's new cache, if any. */
  abortPending(key: CacheKey, runId: string): Promise<void>;
}
