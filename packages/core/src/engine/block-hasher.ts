import { createHash, getHashes } from 'node:crypto';
import type { FileSpan, OperationOptions } from '../contracts/disk.js';
import { InputError } from '../errors.js';

/**
 * Computes block digests. The engine hashes in batches so that an implementation can spread the
 * work over worker threads (the dedup package's pool); this one hashes on the calling thread with
 * node:crypto.
 */
export interface BlockHasher {
  /** Algorithm name, recorded in journals and sent to the target side. */
  readonly algorithm: string;
  /** Digest length in bytes. */
  readonly digestLength: number;
  /** Digests of `blocks`, in order. */
  hash(blocks: readonly Uint8Array[]): Promise<Uint8Array[]>;
  /**
   * Optional: like {@link BlockHasher.hash}, but an all-zero block gets `null` instead of a
   * digest. A pool checks for zeros on its threads, which spares the caller a pass over the data.
   */
  hashOrZero?(blocks: readonly Uint8Array[]): Promise<Array<Uint8Array | null>>;
  /**
   * Optional: allocates a buffer the hasher can read without copying (shared with its threads).
   * The engine reads blocks into such buffers when it can reuse them. The view must start at byte
   * 0 of its `buffer`: the engine recognises its buffers that way when it recycles them.
   */
  allocate?(bytes: number): Uint8Array;
  /**
   * Optional: reads `spans` (from a reader's {@link DiskReader.fileSpans}) back to back into
   * `target`, which must be exactly as long as they are, then returns what
   * {@link BlockHasher.hashOrZero} returns for `target` cut into `blockSize` blocks. A pool reads
   * and hashes on its threads, so reading runs on every core and the caller's thread only posts
   * the work; `target` may come from {@link BlockHasher.allocate}. A file that ends before a span
   * does rejects with an `E_IO` error.
   */
  readAndHashOrZero?(
    spans: readonly FileSpan[],
    target: Uint8Array,
    blockSize: number,
    options?: OperationOptions,
  ): Promise<Array<Uint8Array | null>>;
  /** Releases threads or buffers, if any. */
  close?(): Promise<void>;
}

/**
 * A {@link BlockHasher} on node:crypto (`sha256` by default, which uses the CPU's SHA extensions
 * where present).
 *
 * @throws {@link InputError} when Node does not know the algorithm.
 */
export function createNodeHasher(algorithm = 'sha256'): BlockHasher {
  if (!getHashes().includes(algorithm)) {
    throw new InputError(`digest '${algorithm}' is not available in this Node.js; use sha256`);
  }
  const digestLength = createHash(algorithm).digest().length;
  return {
    algorithm,
    digestLength,
    async hash(blocks) {
      return blocks.map((block) => createHash(algorithm).update(block).digest());
    },
  };
}

/** A hasher resolver: the engine asks for one per run, by algorithm name. */
export type HasherFactory = (algorithm: string) => BlockHasher;

const ZERO_PAGE = new Uint8Array(1024 * 1024);

/** True when every byte of `data` is zero (memcmp against a zero page, 1 MiB at a time). */
export function isZeroBlock(data: Uint8Array): boolean {
  const buffer = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  for (let offset = 0; offset < buffer.length; offset += ZERO_PAGE.length) {
    const end = Math.min(offset + ZERO_PAGE.length, buffer.length);
    if (buffer.compare(ZERO_PAGE, 0, end - offset, offset, end) !== 0) return false;
  }
  return true;
}

/** Compares two digests. */
export function sameDigest(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b);
}
