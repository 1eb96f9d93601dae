/** Bytes a chunk's encoding may add to its block: the codec header (a raw chunk's only overhead). */
export const CHUNK_OVERHEAD_BYTES = 64;

/** A chunk a restore decoded: where it goes, its bytes, the address they must have. */
export interface RestoredChunk {
  index: number;
  plain: Uint8Array;
  address: string;
}

/**
 * A batch of decoded chunks in one buffer: each chunk's pack record is read into the buffer's free
 * space ({@link RestoreBatch.room}), and the chunk's bytes stay there (a raw chunk, in place) or are
 * copied over its record (an inflated or decrypted one), so every block of the batch lies in the
 * one buffer: a hashing pool hashes them there without a copy. A chunk that does not fit is kept
 * where it is (the pool then copies the batch: slower, the same addresses).
 */
export class RestoreBatch {
  readonly chunks: RestoredChunk[] = [];
  /** Plain bytes of the batch's chunks. */
  bytes = 0;
  private at = 0;

  constructor(private readonly buffer: Uint8Array) {}

  /**
   * A place for a record of `recordBytes`, with room behind it for a block of up to `blockBytes`
   * once decoded, or `undefined` when the buffer has no such room left.
   */
  room(recordBytes: number, blockBytes: number): Uint8Array | undefined {
    if (this.at + Math.max(recordBytes, blockBytes) > this.buffer.length) return undefined;
    return this.buffer.subarray(this.at, this.at + recordBytes);
  }

  /** Adds a decoded chunk: in place when it lies in the buffer, else copied in when it fits. */
  add(index: number, address: string, plain: Uint8Array): void {
    let bytes = plain;
    const start = plain.byteOffset - this.buffer.byteOffset;
    if (plain.buffer === this.buffer.buffer && start >= this.at && start + plain.length <= this.buffer.length) {
      this.at = start + plain.length;
    } else if (this.at + plain.length <= this.buffer.length) {
      this.buffer.set(plain, this.at);
      bytes = this.buffer.subarray(this.at, this.at + plain.length);
      this.at += plain.length;
    }
    this.chunks.push({ index, plain: bytes, address });
    this.bytes += plain.length;
  }

  /** Empties the batch for reuse. */
  reset(): void {
    this.chunks.length = 0;
    this.bytes = 0;
    this.at = 0;
  }
}

/** The batch buffers of a restore: a few, reused once their batch is written. */
export class RestoreBatches {
  private readonly free: RestoreBatch[] = [];

  /**
   * @param capacity - bytes of each buffer.
   * @param count - buffers made up front (batches in flight, and the one being filled).
   * @param allocate - makes a buffer the hashing threads read in place, when there is such a pool.
   */
  constructor(
    private readonly capacity: number,
    count: number,
    private readonly allocate: (bytes: number) => Uint8Array | undefined,
  ) {
    for (let i = 0; i < count; i++) this.free.push(this.make());
  }

  private make(): RestoreBatch {
    return new RestoreBatch(this.allocate(this.capacity) ?? Buffer.allocUnsafe(this.capacity));
  }

  /** An empty batch: a free one, or a new one when all are in flight. */
  take(): RestoreBatch {
    return this.free.pop() ?? this.make();
  }

  /** Gives a batch back once its blocks are written (nothing may read them after). */
  release(batch: RestoreBatch): void {
    batch.reset();
    this.free.push(batch);
  }
}
