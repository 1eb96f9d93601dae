import { createHash } from 'node:crypto';
import { readSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import {
  type BlockHasher,
  DriverError,
  type FileSpan,
  InputError,
  IoError,
  throwIfAborted,
  toStorageError,
} from '@replikit/core';
import { isZeroBlock } from '@replikit/core/internal';
import { asDigestKind, DIGEST_LENGTH, type DigestKind } from './digest-kinds.js';
import {
  bindXxh128,
  copyInto,
  createHashMemory,
  createXxh128,
  HASH_MEMORY_THREADS,
  type HashMemory,
  MAX_HASH_MEMORY_BYTES,
  simdSupported,
} from './xxh3/xxh3.js';

const SLOTS_PER_THREAD = 2;

/** Threads of a pool at most: each has a digest slot in a hash memory, and the caller's thread one more. */
const MAX_THREADS = HASH_MEMORY_THREADS - 1;

/** The digest slot of the calling thread (the pool's threads use 0 to `threads - 1`). */
const CALLER_SLOT = HASH_MEMORY_THREADS - 1;

/**
 * Batches of up to this many bytes are hashed on the calling thread: a round trip to a worker
 * (two thread wake-ups, ~0.1 ms on a 2-core VM, far more when the cores are busy) costs more than
 * hashing them (a few µs per 64 KiB block with the SIMD kernel). Scattered changed blocks come
 * one or two at a time.
 */
const INLINE_BYTES = 256 * 1024;

/** A digest on the calling thread, where one is fast enough for {@link INLINE_BYTES}: xxh128 with SIMD, sha256. */
function inlineDigest(algorithm: DigestKind): ((block: Uint8Array) => Uint8Array) | undefined {
  if (algorithm === 'sha256') return (block) => new Uint8Array(createHash('sha256').update(block).digest());
  if (algorithm === 'xxh128' && simdSupported()) {
    const xxh = createXxh128();
    return (block) => xxh.digest(block);
  }
  return undefined;
}

/** Options of {@link createHashingPool}. */
export interface HashingPoolOptions {
  /** The digest. @default 'xxh128' */
  algorithm?: DigestKind | string;
  /** Worker threads. @default os.availableParallelism() */
  threads?: number;
  /**
   * Bytes one worker hashes per message; larger batches are split. A block larger than a slot is
   * hashed whole all the same, alone in its message. @default 4 MiB
   */
  slotBytes?: number;
  /**
   * Start the threads now: the pool is returned once they are up, and every batch larger than a
   * few blocks goes to them from the first one (a long job, like a restore, whose loop may not
   * let the threads' start be noticed for a while). Without it they start with the first large
   * batch, and batches are hashed on the calling thread until they are up. @default false
   */
  startThreads?: boolean;
}

interface Thread {
  worker: Worker;
  /** Its slots that are busy: while any is, the worker keeps the process alive. */
  active: number;
  /** Ids of the shared buffers it has been sent. */
  known: Set<number>;
}

/**
 * What one message to a thread uses. Each thread has {@link SLOTS_PER_THREAD}, so a second batch
 * is queued while the first is hashed: the thread never idles through a message round trip.
 */
interface Slot {
  thread: Thread;
  /** Its number on its thread, which knows its `output`. */
  index: number;
  /** Where copied blocks go (made on first use): a SharedArrayBuffer, or the room of a hash memory (xxh128). */
  input?: Uint8Array;
  /** The digests, then a zero flag per block (shared with the thread). */
  output: Uint8Array;
  busy: boolean;
}

interface Pending {
  resolve(): void;
  reject(error: unknown): void;
  /** The file reads of the job, for error messages. */
  spans?: readonly FileSpan[];
}

/** What a thread answers when a job's file read failed: the span, and the error or the bytes it got. */
interface ReadFailure {
  id: number;
  span: number;
  got?: number;
  error?: { message: string; code?: string };
}

/**
 * A {@link @replikit/core!BlockHasher} that hashes on worker threads: each batch is copied once
 * into a worker's shared buffer (the only copy), hashed there, and the digests come back through
 * another shared buffer. Batches go to the least busy thread (each queues up to two), so concurrent
 * batches (several disks, read-ahead) use every core. Blocks in buffers from `allocate()` (which
 * start at offset 0 of their `SharedArrayBuffer`) are hashed where they are, without a copy.
 *
 * A batch of at most 256 KiB (a few scattered changed blocks) is hashed on the calling thread
 * instead: the round trip to a worker would cost more than the hashing (xxh128 with SIMD, sha256).
 * The threads start with the first batch too large for that, so a run that only ever hashes such
 * small batches (a one-shot run with a small change set) starts none; while they start, batches
 * are hashed here, so none waits for them. The digests are the same either way.
 *
 * xxh128 runs on a WebAssembly SIMD kernel (XXH3-128, bit-identical to hash-wasm's, which stays
 * the fallback where SIMD is missing); its shared buffers are WebAssembly memories, so the kernel
 * reads blocks in place.
 *
 * @example
 * ```ts
 * const pool = await createHashingPool({ algorithm: 'xxh128' });
 * const [digest] = await pool.hash([block]);
 * await pool.close();
 * ```
 */
export async function createHashingPool(options: HashingPoolOptions = {}): Promise<BlockHasher> {
  const algorithm = asDigestKind(options.algorithm ?? 'xxh128');
  const threads = options.threads ?? Math.max(1, availableParallelism());
  const slotBytes = options.slotBytes ?? 4 * 1024 * 1024;
  if (!Number.isSafeInteger(threads) || threads < 1 || threads > MAX_THREADS) {
    throw new InputError(`threads must be from 1 to ${MAX_THREADS}, got ${threads}`);
  }
  const digestLength = DIGEST_LENGTH[algorithm];
  const maxBlocks = Math.ceil(slotBytes / 512);
  const url = new URL('./hash-worker.js', import.meta.url);
  const workers: Thread[] = [];
  const slots: Slot[] = [];
  const pending = new Map<number, Pending>();
  const waiting: Array<(slot: Slot) => void> = [];
  let nextId = 0;
  let closed = false;
  // Every shared buffer that blocks are hashed in has an id. A thread is sent a buffer once (with
  // its hash memory, for xxh128, so the kernel is instantiated once per memory); later messages
  // carry only numbers, which cost a few µs to post instead of ~70 (cloning a memory and buffers).
  // Threads are told when a buffer is gone.
  const buffers = new WeakMap<ArrayBufferLike, { id: number; memory?: HashMemory }>();
  const dropped = new FinalizationRegistry<number>((id) => {
    if (closed) return;
    for (const thread of workers) {
      if (thread.known.delete(id)) thread.worker.postMessage({ drop: id });
    }
  });
  let nextBufferId = 0;
  const register = (buffer: SharedArrayBuffer, memory?: HashMemory) => {
    const entry = { id: nextBufferId++, ...(memory ? { memory } : {}) };
    buffers.set(buffer, entry);
    dropped.register(buffer, entry.id);
    return entry;
  };
  const sharedBuffer = (bytes: number): Uint8Array => {
    if (algorithm !== 'xxh128') {
      const view = new Uint8Array(new SharedArrayBuffer(bytes));
      register(view.buffer as SharedArrayBuffer);
      return view;
    }
    const { memory, view } = createHashMemory(bytes);
    register(view.buffer as SharedArrayBuffer, memory);
    return view;
  };
  /** The id of a shared buffer, sent to the thread first if it does not know it yet. */
  const bufferIdFor = (thread: Thread, buffer: SharedArrayBuffer): number => {
    const entry = buffers.get(buffer) ?? register(buffer);
    if (!thread.known.has(entry.id)) {
      thread.worker.postMessage({ add: entry.id, buffer, ...(entry.memory ? { memory: entry.memory } : {}) });
      thread.known.add(entry.id);
    }
    return entry.id;
  };

  const fail = (error: unknown) => {
    for (const job of pending.values()) job.reject(error);
    pending.clear();
  };
  /** Starts the threads and their slots: once, when the first batch too large to hash here comes. */
  const startThreads = async (): Promise<void> => {
    const started = await Promise.all(
      Array.from({ length: threads }, async (_, thread): Promise<Thread> => {
        // The worker is plain JavaScript: it needs none of the parent's loaders (tsx, say), which cost startup time.
        const worker = new Worker(url, { workerData: { kind: algorithm, thread, digestLength }, execArgv: [] });
        workers.push({ worker, active: 0, known: new Set() });
        await new Promise<void>((resolve, reject) => {
          worker.once('message', () => resolve());
          worker.once('error', reject);
        });
        worker.on('message', (reply: number | ReadFailure) => {
          const id = typeof reply === 'number' ? reply : reply.id;
          const job = pending.get(id);
          pending.delete(id);
          if (typeof reply === 'number') job?.resolve();
          else job?.reject(readError(reply, job.spans?.[reply.span]));
        });
        worker.on('error', (error) =>
          fail(new DriverError(`a hashing thread failed: ${error.message}`, { cause: error })),
        );
        worker.unref();
        return workers.find((entry) => entry.worker === worker)!;
      }),
    );
    if (closed) throw new InputError('the hashing pool was closed');
    for (let i = 0; i < SLOTS_PER_THREAD; i++) {
      for (const thread of started) {
        const output = new SharedArrayBuffer(maxBlocks * (digestLength + 1));
        const slot: Slot = { thread, index: i, output: new Uint8Array(output), busy: false };
        thread.worker.postMessage({ output: i, buffer: output });
        slots.push(slot);
      }
    }
  };
  // Starting a thread (a Node environment, then the digest module) costs tens of milliseconds of
  // CPU each: a run that hashes only a few changed blocks hashes them all here and starts none.
  let threadsReady: Promise<void> | undefined;
  let threadsUp = false;
  const ready = (): Promise<void> => {
    threadsReady ??= startThreads().then(() => {
      threadsUp = true;
    });
    return threadsReady;
  };

  // A busy worker keeps the process alive (an idle one does not: a forgotten pool never hangs it).
  const take = (slot: Slot) => {
    slot.busy = true;
    if (slot.thread.active++ === 0) slot.thread.worker.ref();
  };
  const acquire = (): Promise<Slot> => {
    // a free slot of the least busy thread
    let free: Slot | undefined;
    for (const slot of slots) {
      if (!slot.busy && (!free || slot.thread.active < free.thread.active)) free = slot;
    }
    if (free) {
      take(free);
      return Promise.resolve(free);
    }
    return new Promise((resolve) => waiting.push(resolve));
  };
  const release = (slot: Slot) => {
    const next = waiting.shift();
    if (next) {
      next(slot);
    } else {
      slot.busy = false;
      if (--slot.thread.active === 0) slot.thread.worker.unref();
    }
  };

  // Copies of blocks larger than a slot, kept for the next such blocks: at most one per thread
  // (as many as can be hashed at once), made only when such blocks come.
  const large: Uint8Array[] = [];
  const borrowLarge = (bytes: number): Uint8Array => {
    const at = large.findIndex((buffer) => buffer.length >= bytes);
    return at >= 0 ? large.splice(at, 1)[0]! : sharedBuffer(bytes);
  };
  const returnLarge = (buffer: Uint8Array) => {
    if (large.length < threads) large.push(buffer);
  };

  /**
   * Hashes `blocks` on a thread. With `reads` ([fd, position, length, offset] per span, the offset
   * in the blocks' shared buffer), the thread first reads the spans into the buffer.
   */
  async function hashChunk(
    blocks: readonly Uint8Array[],
    zeroFlags: boolean,
    reads?: { places: Float64Array; spans: readonly FileSpan[] },
  ): Promise<Array<Uint8Array | null>> {
    await ready();
    const slot = await acquire();
    let borrowed: Uint8Array | undefined;
    try {
      const count = blocks.length;
      // [offset, length] of each block in the shared buffer: blocks in one shared buffer (from
      // `allocate`) are hashed where they are; others are copied once into the slot's buffer.
      const places = new Float64Array(count * 2);
      const shared = blocks[0]?.buffer;
      let input: SharedArrayBuffer;
      if (shared instanceof SharedArrayBuffer && blocks.every((block) => block.buffer === shared)) {
        input = shared;
        for (let i = 0; i < count; i++) {
          places[2 * i] = blocks[i]!.byteOffset;
          places[2 * i + 1] = blocks[i]!.length;
        }
      } else {
        // A block larger than a slot (blocks of up to 16 MiB) comes alone: it is copied into a
        // large buffer borrowed for this job, so slots stay small.
        const total = blocks.reduce((sum, block) => sum + block.length, 0);
        let room: Uint8Array;
        if (total > slotBytes) {
          borrowed = borrowLarge(total);
          room = borrowed;
        } else {
          slot.input ??= sharedBuffer(slotBytes);
          room = slot.input;
        }
        input = room.buffer as SharedArrayBuffer;
        let at = 0;
        for (let i = 0; i < count; i++) {
          const block = blocks[i]!;
          copyInto(room, at, block);
          places[2 * i] = room.byteOffset + at;
          places[2 * i + 1] = block.length;
          at += block.length;
        }
      }
      const buffer = bufferIdFor(slot.thread, input);
      const id = nextId++;
      await new Promise<void>((resolve, reject) => {
        pending.set(id, { resolve, reject, ...(reads ? { spans: reads.spans } : {}) });
        slot.thread.worker.postMessage({
          id,
          buffer,
          output: slot.index,
          places,
          zeroFlags,
          ...(reads ? { reads: reads.places } : {}),
        });
      });
      // One copy of the job's digests (the slot is reused), viewed per block.
      const flags = count * digestLength;
      const output = slot.output.slice(0, flags + count);
      const digests: Array<Uint8Array | null> = new Array(count);
      for (let i = 0; i < count; i++) {
        digests[i] =
          zeroFlags && output[flags + i] === 1 ? null : output.subarray(i * digestLength, (i + 1) * digestLength);
      }
      return digests;
    } finally {
      if (borrowed) returnLarge(borrowed);
      release(slot);
    }
  }

  const inline = inlineDigest(algorithm);
  // A block in one of this pool's hash memories is hashed where it lies on the calling thread too,
  // with the kernel bound to that memory (once) and the digest slot no thread of the pool uses.
  const boundHere = new WeakMap<ArrayBufferLike, ReturnType<typeof bindXxh128>>();
  const inPlace =
    algorithm === 'xxh128' && simdSupported()
      ? (block: Uint8Array): Uint8Array | undefined => {
          const memory = buffers.get(block.buffer)?.memory;
          if (!memory) return undefined;
          let kernel = boundHere.get(block.buffer);
          if (!kernel) {
            kernel = bindXxh128(memory, CALLER_SLOT);
            boundHere.set(block.buffer, kernel);
          }
          const digest = new Uint8Array(16);
          kernel.digestInto(block.byteOffset, block.length, digest, 0);
          return digest;
        }
      : undefined;
  const hashHere = (block: Uint8Array): Uint8Array => inPlace?.(block) ?? inline!(block);
  /**
   * True while the threads are not up yet and this thread can hash: the threads are started (in
   * the background) and the batch is hashed here, so no batch waits for a thread to start.
   */
  const warmingUp = (): boolean => {
    if (threadsUp || !inline) return false;
    ready().catch(() => undefined); // a failed start is reported by the first batch that needs it
    return true;
  };

  /** Splits a batch into slot-sized chunks, hashed in parallel on idle workers (small ones here). */
  async function hashAll(blocks: readonly Uint8Array[], zeroFlags: boolean): Promise<Array<Uint8Array | null>> {
    if (closed) throw new InputError('the hashing pool is closed');
    if (inline && (blocks.reduce((sum, block) => sum + block.length, 0) <= INLINE_BYTES || warmingUp())) {
      return blocks.map((block) => (zeroFlags && isZeroBlock(block) ? null : hashHere(block)));
    }
    const chunks: Array<Promise<Array<Uint8Array | null>>> = [];
    let start = 0;
    let bytes = 0;
    for (let i = 0; i < blocks.length; i++) {
      const length = blocks[i]!.length;
      // A chunk is at most a slot, or a single block when one is larger than a slot.
      if (i > start && (bytes + length > slotBytes || i - start >= maxBlocks)) {
        chunks.push(hashChunk(blocks.slice(start, i), zeroFlags));
        start = i;
        bytes = 0;
      }
      bytes += length;
    }
    if (start < blocks.length) chunks.push(hashChunk(blocks.slice(start), zeroFlags));
    return (await Promise.all(chunks)).flat();
  }

  /**
   * Reads the spans into `target` and hashes it in `blockSize` blocks: on the threads, a chunk of
   * at most a slot per job, when `target` lies in a buffer of this pool's; else here.
   */
  async function readAndHash(
    spans: readonly FileSpan[],
    target: Uint8Array,
    blockSize: number,
    signal: AbortSignal | undefined,
  ): Promise<Array<Uint8Array | null>> {
    if (closed) throw new InputError('the hashing pool is closed');
    if (!Number.isSafeInteger(blockSize) || blockSize < 1) {
      throw new InputError(`blockSize must be a positive whole number of bytes, got ${blockSize}`);
    }
    let total = 0;
    for (const span of spans) {
      const valid =
        Number.isSafeInteger(span.fd) &&
        span.fd >= 0 &&
        Number.isSafeInteger(span.position) &&
        span.position >= 0 &&
        Number.isSafeInteger(span.length) &&
        span.length > 0;
      if (!valid) {
        throw new InputError(
          `a file span needs a descriptor, a position and a positive length (whole numbers), got ${JSON.stringify(span)}`,
        );
      }
      total += span.length;
    }
    if (total !== target.length) {
      throw new InputError(`the file spans cover ${total} bytes, the target holds ${target.length}`);
    }
    throwIfAborted(signal);
    const shared = target.buffer instanceof SharedArrayBuffer ? target.buffer : undefined;
    if (!shared || !buffers.has(shared) || target.length <= INLINE_BYTES || warmingUp()) {
      readSpans(spans, target);
      return hashAll(cut(target, blockSize), true);
    }
    // Chunks of whole blocks, each read and hashed by one thread: a slot's worth, or one block
    // when a block is larger than a slot (it is read and hashed in place, in `target`).
    const chunkBytes = Math.max(1, Math.min(Math.floor(slotBytes / blockSize), maxBlocks)) * blockSize;
    const chunks: Array<Promise<Array<Uint8Array | null>>> = [];
    let span = 0;
    let within = 0; // bytes of spans[span] already assigned
    for (let start = 0; start < target.length; start += chunkBytes) {
      const end = Math.min(target.length, start + chunkBytes);
      const places: number[] = [];
      const used: FileSpan[] = [];
      for (let at = start; at < end; ) {
        const current = spans[span]!;
        const length = Math.min(current.length - within, end - at);
        places.push(current.fd, current.position + within, length, target.byteOffset + at);
        used.push({ ...current, position: current.position + within, length });
        at += length;
        within += length;
        if (within === current.length) {
          span++;
          within = 0;
        }
      }
      const view = target.subarray(start, end);
      chunks.push(hashChunk(cut(view, blockSize), true, { places: Float64Array.from(places), spans: used }));
    }
    // Every chunk settles before this does: a thread must never read into `target` (or through
    // the reader's descriptors) after the caller was told the work is over, even when one failed.
    const settled = await Promise.allSettled(chunks);
    const failed = settled.find((result) => result.status === 'rejected');
    if (failed) throw failed.reason;
    return settled.flatMap((result) => (result as PromiseFulfilledResult<Array<Uint8Array | null>>).value);
  }

  if (options.startThreads) await ready();
  return {
    algorithm,
    digestLength,
    async hash(blocks) {
      return (await hashAll(blocks, false)) as Uint8Array[];
    },
    hashOrZero(blocks) {
      return hashAll(blocks, true);
    },
    readAndHashOrZero(spans, target, blockSize, options) {
      return readAndHash(spans, target, blockSize, options?.signal);
    },
    allocate(bytes: number): Uint8Array {
      if (!Number.isSafeInteger(bytes) || bytes < 0 || bytes > MAX_HASH_MEMORY_BYTES) {
        throw new InputError(`allocate takes a byte count from 0 to ${MAX_HASH_MEMORY_BYTES}, got ${bytes}`);
      }
      return sharedBuffer(bytes);
    },
    async close() {
      if (closed) return;
      closed = true;
      fail(new InputError('the hashing pool was closed'));
      await threadsReady?.catch(() => {}); // threads still starting are terminated too
      await Promise.all(workers.map(({ worker }) => worker.terminate()));
    },
  };
}

/** Views of `data` cut into `blockSize` blocks (the last one possibly short). */
function cut(data: Uint8Array, blockSize: number): Uint8Array[] {
  const blocks: Uint8Array[] = [];
  for (let at = 0; at < data.length; at += blockSize) blocks.push(data.subarray(at, at + blockSize));
  return blocks;
}

/** Reads the spans back to back into `target` on this thread. */
function readSpans(spans: readonly FileSpan[], target: Uint8Array): void {
  let at = 0;
  spans.forEach((span, index) => {
    let got = 0;
    try {
      while (got < span.length) {
        const n = readSync(span.fd, target, at + got, span.length - got, span.position + got);
        if (n === 0) break;
        got += n;
      }
    } catch (error) {
      const { message, code } = error as NodeJS.ErrnoException;
      throw readError({ id: -1, span: index, error: { message, ...(code ? { code } : {}) } }, span);
    }
    if (got < span.length) throw readError({ id: -1, span: index, got }, span);
    at += span.length;
  });
}

/** The error for a failed read of a span (by a thread or here). */
function readError(failure: ReadFailure, span: FileSpan | undefined): Error {
  const where = span ? `${span.path} at ${span.position}` : 'a source file';
  if (failure.error) {
    const cause = Object.assign(new Error(failure.error.message), { code: failure.error.code, path: span?.path });
    return toStorageError(cause, `reading ${where}`);
  }
  const end = span ? span.position + (failure.got ?? 0) : 0;
  return new IoError(
    `reading ${where}: the file ends at ${end} bytes, before the ${span ? span.position + span.length : 0} the disk needs; it was truncated while open`,
    { details: { path: span?.path, end } },
  );
}
