import { inflateRawSync } from 'node:zlib';
import type { DiskReader, DiskRef, DiskWriter, OperationOptions } from '../contracts/disk.js';
import type { Hypervisor, Replica } from '../contracts/hypervisor.js';
import type { BlockDigest, BlockOp, DeltaOp } from '../contracts/transport.js';
import type { BlockHasher } from '../engine/block-hasher.js';
import { isZeroBlock, sameDigest } from '../engine/block-hasher.js';
import { InputError, NotFoundError, TransportError, throwIfAborted } from '../errors.js';
import { checkRange } from '../util/range.js';
import { xorInto } from '../util/xor.js';

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
  private deltaReader: DiskReader | undefined;
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
   * Applies a {@link DeltaOp}: rebuilds the block from the replica's current block (bounded
   * inflate, exact length), checks its digest when given, writes it.
   */
  async applyDelta(op: DeltaOp, options?: OperationOptions): Promise<void> {
    const writer = this.open;
    if (!Number.isSafeInteger(op.index) || op.index < 0 || op.index >= this.blockCount) {
      throw new InputError(`block ${op.index} is outside replica disk ${this.disk.id} (${this.blockCount} blocks)`);
    }
    const offset = op.index * this.blockSize;
    const length = Math.min(this.blockSize, this.disk.size - offset);
    const data = await this.rebuild(offset, length, op.delta, op.index, options);
    if (op.digest) await this.checkDigest(op.index, data, op.digest);
    await writer.write(offset, data, options);
    this.bytesWritten += data.length;
  }

  private async rebuild(
    offset: number,
    length: number,
    delta: Uint8Array,
    index: number,
    options?: OperationOptions,
  ): Promise<Uint8Array> {
    let xor: Buffer;
    try {
      xor = inflateRawSync(delta, { maxOutputLength: Math.max(1, length) });
    } catch (error) {
      throw new TransportError(`the delta of block ${index} does not inflate: ${(error as Error).message}`, {
        cause: error,
      });
    }
    if (xor.length !== length) {
      throw new TransportError(`the delta of block ${index} inflates to ${xor.length} bytes, not ${length}`);
    }
    this.deltaReader ??= await this.openReader(options);
    const current = await this.deltaReader.read(offset, length, options);
    this.bytesRead += length;
    xorInto(xor, current);
    return xor;
  }

  /**
   * Digests of the replica's current content from `fromBlock` on, in order; `null` for an
   * all-zero block. Reads ahead one request while hashing the previous one.
   */
  async *digests(fromBlock: number, options?: OperationOptions): AsyncIterable<BlockDigest> {
    if (!Number.isSafeInteger(fromBlock) || fromBlock < 0) throw new InputError(`invalid first block ${fromBlock}`);
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
    const reader = this.deltaReader;
    this.writer = undefined;
    this.deltaReader = undefined;
    await reader?.close().catch(() => undefined);
    await writer?.close();
  }

  /** Where this disk belongs. */
  get replicaId(): string {
    return this.replica.id;
  }
}

/**
 * The target side of sessions: opens {@link TargetDisk}s of a replica on a target hypervisor. A
 * network agent wraps one of these; the in-process transport calls it directly.
 */
export class BlockTarget {
  constructor(
    private readonly hypervisor: Hypervisor,
    private readonly hasherFor: (algorithm: string) => BlockHasher,
  ) {}

  /** Opens the writer of one replica disk for a session. */
  async openDisk(replica: Replica, disk: DiskRef, blockSize: number, digest: string, options?: OperationOptions) {
    const known = replica.disks.find((d) => d.id === disk.id);
    if (!known) throw new NotFoundError(`replica ${replica.name} has no disk '${disk.id}'`);
    const writer = await this.hypervisor.openWriter(replica, known, options);
    return new TargetDisk(this.hypervisor, replica, known, writer, blockSize, this.hasherFor(digest));
  }
}
