import {
  type BlockDigest,
  type BlockHasher,
  type BlockOp,
  type DiskReader,
  type DiskRef,
  type DiskWriter,
  type Hypervisor,
  InputError,
  isReplikitError,
  NotFoundError,
  type OperationOptions,
  type Replica,
  TransportError,
  throwIfAborted,
  type WriterOptions,
} from '@replikit/core';
import { checkRange, isZeroBlock, sameDigest } from '@replikit/core/internal';
import { type DeltaRecord, decodeBlockDelta, type EncodedDelta } from './block-delta.js';

/** Bytes read from the replica per request when computing its digests. */
const DIGEST_READ_BYTES = 1024 * 1024;

/**
 * The target side of a session for one replica disk, independent of how blocks travel: the
 * in-process transport calls it directly, a network agent calls it for each frame it decodes.
 */
export class TargetDisk {
  /** The replica disk. */
  readonly disk: DiskRef;
  /** Bytes written so far. */
  bytesWritten = 0;
  /** Bytes of the replica read to compute digests. */
  bytesRead = 0;
  private writer: DiskWriter | undefined;
  private deltaReaderOpening: Promise<DiskReader> | undefined;
  private readonly blockSize: number;

  constructor(
    private readonly hypervisor: Hypervisor,
    private readonly replica: Replica,
    disk: DiskRef,
    writer: DiskWriter,
    blockSize: number,
    private readonly hasher: BlockHasher,
  ) {
    this.disk = disk;
    this.writer = writer;
    this.blockSize = blockSize;
  }

  /** Number of blocks of the disk. */
  get blockCount(): number {
    return Math.ceil(this.disk.size / this.blockSize);
  }

  private get open(): DiskWriter {
    if (!this.writer) throw new TransportError(`replica disk ${this.disk.id} is closed`);
    return this.writer;
  }

  /** Applies one operation: checks bounds and digest, then writes. */
  async apply(op: BlockOp, options?: OperationOptions): Promise<void> {
    const writer = this.open;
    const offset = op.index * this.blockSize;
    if (!Number.isSafeInteger(op.index) || op.index < 0 || op.index >= this.blockCount) {
      throw new InputError(`block ${op.index} is outside replica disk ${this.disk.id} (${this.blockCount} blocks)`);
    }
    if (op.kind === 'zero') {
      if (!Number.isSafeInteger(op.count) || op.count < 1 || op.index + op.count > this.blockCount) {
        throw new InputError(`zero run ${op.index}+${op.count} is outside replica disk ${this.disk.id}`);
      }
      const length = Math.min(op.count * this.blockSize, this.disk.size - offset);
      await writer.writeZeroes(offset, length, options);
      return;
    }
    const expected = Math.min(this.blockSize, this.disk.size - offset);
    if (op.data.length !== expected) {
      throw new InputError(
        `block ${op.index} has ${op.data.length} bytes; replica disk ${this.disk.id} expects ${expected}`,
      );
    }
    checkRange(this.disk.size, offset, op.data.length, `block ${op.index}`);
    if (op.digest) await this.checkDigest(op.index, op.data, op.digest);
    await writer.write(offset, op.data, options);
    this.bytesWritten += op.data.length;
  }

  private async checkDigest(index: number, data: Uint8Array, digest: Uint8Array): Promise<void> {
    const [actual] = await this.hasher.hash([data]);
    if (!actual || !sameDigest(actual, digest)) {
      throw new TransportError(`block ${index} of disk ${this.disk.id} arrived damaged (digest mismatch)`, {
        details: { index },
      });
    }
  }

  /**
   * Applies an {@link EncodedDelta}: decodes it (every field bounds-checked) and writes its records, the
   * new bytes of the changed ranges, without reading the replica. With a digest, the replica's
   * block is read and the rebuilt block checked before anything is written. More than
   * eight records become one write from the first to the last (the bytes between them
   * read from the replica).
   */
  async applyDelta(op: EncodedDelta, options?: OperationOptions): Promise<void> {
    const writer = this.open;
    if (!Number.isSafeInteger(op.index) || op.index < 0 || op.index >= this.blockCount) {
      throw new InputError(`block ${op.index} is outside replica disk ${this.disk.id} (${this.blockCount} blocks)`);
    }
    const offset = op.index * this.blockSize;
    const length = Math.min(this.blockSize, this.disk.size - offset);
    const records = decodeBlockDelta(op.delta, length, op.index);
    if (records.length === 0) return;
    let writes: DeltaRecord[] = records;
    if (op.digest || records.length > MAX_WRITES) {
      const first = records[0]!.offset;
      const last = records.at(-1)!;
      const stop = last.offset + last.data.length;
      // With a digest the whole block is rebuilt; otherwise the range the records span.
      const from = op.digest ? 0 : first;
      const to = op.digest ? length : stop;
      const reader = await this.deltaReader(options);
      const span = await reader.read(offset + from, to - from, options);
      this.bytesRead += span.length;
      for (const record of records) span.set(record.data, record.offset - from);
      if (op.digest) await this.checkDigest(op.index, span, op.digest);
      if (records.length > MAX_WRITES) writes = [{ offset: first, data: span.subarray(first - from, stop - from) }];
    }
    for (const write of writes) {
      await writer.write(offset + write.offset, write.data, options);
      this.bytesWritten += write.data.length;
    }
  }

  /** The reader of the replica's current blocks, for deltas: opened once, on first use. */
  private deltaReader(options?: OperationOptions): Promise<DiskReader> {
    if (!this.deltaReaderOpening) {
      this.deltaReaderOpening = this.openReader(options);
      this.deltaReaderOpening.catch(() => undefined); // awaited by the caller; a later close ignores it
    }
    return this.deltaReaderOpening;
  }

  /**
   * Digests of the replica's current content from `fromBlock` on, in order; `null` for an
   * all-zero block. When the hypervisor digests the replica where it lives
   * ({@link Hypervisor.replicaDigests}), those are passed on (checked for order and length) and
   * nothing is read here ({@link TargetDisk.bytesRead} stays 0), unless the hook fails with
   * `E_UNSUPPORTED` before its first digest; otherwise the replica is read,
   * one request ahead while the previous one is hashed.
   */
  async *digests(fromBlock: number, options?: OperationOptions): AsyncIterable<BlockDigest> {
    if (!Number.isSafeInteger(fromBlock) || fromBlock < 0) throw new InputError(`invalid first block ${fromBlock}`);
    const remote = this.hypervisor.replicaDigests?.(
      this.disk,
      { fromBlock, blockSize: this.blockSize, algorithm: this.hasher.algorithm },
      options,
    );
    if (remote !== undefined) {
      // `E_UNSUPPORTED` before the first digest (an agent without this algorithm): read instead.
      const iterator = remote[Symbol.asyncIterator]();
      let first: IteratorResult<BlockDigest> | undefined;
      try {
        first = await iterator.next();
      } catch (error) {
        if (!isReplikitError(error, 'E_UNSUPPORTED')) throw error;
      }
      if (first !== undefined) {
        yield* this.checked(continueWith(first, iterator), fromBlock);
        return;
      }
    }
    const reader = await this.openReader(options);
    // The next read is issued before this one is hashed; when the consumer stops early it may
    // still be running (or fail with the abort reason): it is always settled before the reader closes.
    let pending: Promise<Uint8Array> | undefined;
    try {
      const blocksPerRead = Math.max(1, Math.floor(DIGEST_READ_BYTES / this.blockSize));
      const readAt = (index: number): Promise<Uint8Array> | undefined => {
        if (index >= this.blockCount) return undefined;
        const offset = index * this.blockSize;
        const length = Math.min(blocksPerRead * this.blockSize, this.disk.size - offset);
        const read = reader.read(offset, length, options);
        read.catch(() => undefined); // awaited below; this only keeps an abandoned read from going unhandled
        return read;
      };
      let index = fromBlock;
      pending = readAt(index);
      while (pending) {
        throwIfAborted(options?.signal);
        const chunk = await pending;
        const first = index;
        index += Math.ceil(chunk.length / this.blockSize);
        pending = readAt(index);
        this.bytesRead += chunk.length;
        const blocks: Uint8Array[] = [];
        for (let at = 0; at < chunk.length; at += this.blockSize) {
          blocks.push(chunk.subarray(at, Math.min(at + this.blockSize, chunk.length)));
        }
        const zero = blocks.map(isZeroBlock);
        const digests = await this.hasher.hash(blocks.filter((_, i) => !zero[i]));
        let next = 0;
        for (let i = 0; i < blocks.length; i++) {
          yield { index: first + i, digest: zero[i] ? null : digests[next++]! };
        }
      }
    } finally {
      await pending?.catch(() => undefined);
      await reader.close();
    }
  }

  /** The digests a hypervisor computed, checked: one per block, in order, of the hasher's length. */
  private async *checked(digests: AsyncIterable<BlockDigest>, fromBlock: number): AsyncIterable<BlockDigest> {
    let expected = fromBlock;
    for await (const { index, digest } of digests) {
      if (index !== expected || index >= this.blockCount) {
        throw new TransportError(
          `the target driver digested block ${index} of replica disk ${this.disk.id} where block ${expected} was expected`,
        );
      }
      if (digest !== null && digest.length !== this.hasher.digestLength) {
        throw new TransportError(
          `the target driver's digest of block ${index} of replica disk ${this.disk.id} has ${digest.length} bytes, not ${this.hasher.digestLength}`,
        );
      }
      expected++;
      yield { index, digest };
    }
    if (expected < this.blockCount) {
      throw new TransportError(
        `the target driver's digests of replica disk ${this.disk.id} end at block ${expected} of ${this.blockCount}`,
      );
    }
  }

  private async openReader(options?: OperationOptions): Promise<DiskReader> {
    return this.hypervisor.openReader(this.disk, options);
  }

  /** Makes every write durable. */
  async flush(options?: OperationOptions): Promise<void> {
    await this.open.flush(options);
  }

  /** Flushes and closes the writer. */
  async close(): Promise<void> {
    const writer = this.writer;
    const reader = this.deltaReaderOpening;
    this.writer = undefined;
    this.deltaReaderOpening = undefined;
    await reader?.then((r) => r.close()).catch(() => undefined);
    await writer?.close();
  }

  /** Where this disk belongs. */
  get replicaId(): string {
    return this.replica.id;
  }
}

/** Most separate writes a delta turns into; more records are written as one range. */
const MAX_WRITES = 8;

/**
 * The target side of sessions: opens {@link TargetDisk}s of a replica on a target hypervisor. A
 * network agent wraps one of these; the in-process transport calls it directly.
 */
export class BlockTarget {
  constructor(
    private readonly hypervisor: Hypervisor,
    private readonly hasherFor: (algorithm: string) => BlockHasher,
  ) {}

  /**
   * Opens the writer of one replica disk for a session; `options.runId` is the session's run (the
   * driver refuses it when another run holds the replica, and never continues another's writes).
   */
  async openDisk(replica: Replica, disk: DiskRef, blockSize: number, digest: string, options?: WriterOptions) {
    const known = replica.disks.find((d) => d.id === disk.id);
    if (!known) throw new NotFoundError(`replica ${replica.name} has no disk '${disk.id}'`);
    const writer = await this.hypervisor.openWriter(replica, known, options);
    return new TargetDisk(this.hypervisor, replica, known, writer, blockSize, this.hasherFor(digest));
  }
}

/** `first`, then the rest of `iterator`; the iterator is returned however the walk ends. */
async function* continueWith(
  first: IteratorResult<BlockDigest>,
  iterator: AsyncIterator<BlockDigest>,
): AsyncIterable<BlockDigest> {
  try {
    let next = first;
    while (!next.done) {
      yield next.value;
      next = await iterator.next();
    }
  } finally {
    await iterator.return?.();
  }
}
