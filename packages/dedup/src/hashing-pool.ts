import { createHash } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { type BlockHasher, DriverError, InputError, isZeroBlock } from '@replikit/core';
import { asDigestKind, DIGEST_LENGTH, type DigestKind } from './digest-kinds.js';
import {
  copyInto,
  createHashMemory,
  createXxh128,
  type HashMemory,
  MAX_HASH_MEMORY_BYTES,
  simdSupported,
} from './xxh3/xxh3.js';

const SLOTS_PER_THREAD = 2;

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
  /** Bytes one worker hashes per message; larger batches are split. @default 4 MiB */
  slotBytes?: number;
}

interface Thread {
  worker: Worker;
  /** Its slots that are busy: while any is, the worker keeps the process alive. */
  active: number;
}

/**
 * What one message to a thread uses. Each thread has {@link SLOTS_PER_THREAD}, so a second batch
 * is queued while the first is hashed: the thread never idles through a message round trip.
 */
interface Slot {
  thread: Thread;
  /** Where copied blocks go (made on first use): a SharedArrayBuffer, or the room of a hash memory (xxh128). */
  input?: Uint8Array;
  output: SharedArrayBuffer;
  busy: boolean;
}

interface Pending {
  resolve(): void;
  reject(error: unknown): void;
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
  if (!Number.isSafeInteger(threads) || threads < 1 || threads > 256) {
    throw new InputError(`threads must be from 1 to 256, got ${threads}`);
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
  // For xxh128, shared buffers are hash memories (WebAssembly) that the workers' kernel reads in
  // place: each has an id, so a worker instantiates the kernel once per memory, and is told when
  // the memory is gone.
  const memories = new WeakMap<ArrayBufferLike, { memory: HashMemory; memoryId: number }>();
  const dropped = new FinalizationRegistry<number>((memoryId) => {
    if (!closed) for (const { worker } of workers) worker.postMessage({ drop: memoryId });
  });
  let nextMemoryId = 0;
  const sharedBuffer = (bytes: number): Uint8Array => {
    if (algorithm !== 'xxh128') return new Uint8Array(new SharedArrayBuffer(bytes));
    const { memory, view } = createHashMemory(bytes);
    const memoryId = nextMemoryId++;
    memories.set(view.buffer, { memory, memoryId });
    dropped.register(view.buffer, memoryId);
    return view;
  };

  const fail = (error: unknown) => {
    for (const job of pending.values()) job.reject(error);
    pending.clear();
  };
  const started = await Promise.all(
    Array.from({ length: threads }, async (_, thread): Promise<Thread> => {
      // The worker is plain JavaScript: it needs none of the parent's loaders (tsx, say), which cost startup time.
      const worker = new Worker(url, { workerData: { kind: algorithm, thread }, execArgv: [] });
      await new Promise<void>((resolve, reject) => {
        worker.once('message', () => resolve());
        worker.once('error', reject);
      });
      worker.on('message', (id: number) => {
        const job = pending.get(id);
        pending.delete(id);
        job?.resolve();
      });
      worker.on('error', (error) =>
        fail(new DriverError(`a hashing thread failed: ${error.message}`, { cause: error })),
      );
      worker.unref();
      return { worker, active: 0 };
    }),
  );
  workers.push(...started);
  for (let i = 0; i < SLOTS_PER_THREAD; i++) {
    for (const thread of started) {
      slots.push({ thread, output: new SharedArrayBuffer(maxBlocks * (digestLength + 1)), busy: false });
    }
  }

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

  async function hashChunk(blocks: readonly Uint8Array[], zeroFlags: boolean): Promise<Array<Uint8Array | null>> {
    const slot = await acquire();
    try {
      const lengths = blocks.map((block) => block.length);
      // Blocks in one shared buffer (from `allocate`) are hashed where they are; others are copied
      // once into the worker's slot.
      const shared = blocks[0]?.buffer;
      const inPlace = shared instanceof SharedArrayBuffer && blocks.every((block) => block.buffer === shared);
      let message: { input: SharedArrayBuffer; offsets: number[]; memory?: HashMemory; memoryId?: number };
      if (inPlace) {
        message = { input: shared, offsets: blocks.map((block) => block.byteOffset), ...memories.get(shared) };
      } else {
        slot.input ??= sharedBuffer(slotBytes);
        const offsets: number[] = [];
        let at = 0;
        for (const block of blocks) {
          copyInto(slot.input, at, block);
          offsets.push(slot.input.byteOffset + at);
          at += block.length;
        }
        const input = slot.input.buffer as SharedArrayBuffer;
        message = { input, offsets, ...memories.get(input) };
      }
      const id = nextId++;
      await new Promise<void>((resolve, reject) => {
        pending.set(id, { resolve, reject });
        slot.thread.worker.postMessage({ id, ...message, output: slot.output, lengths, digestLength, zeroFlags });
      });
      const output = new Uint8Array(slot.output);
      const flags = blocks.length * digestLength;
      return blocks.map((_, i) =>
        zeroFlags && output[flags + i] === 1 ? null : output.slice(i * digestLength, (i + 1) * digestLength),
      );
    } finally {
      release(slot);
    }
  }

  const inline = inlineDigest(algorithm);

  /** Splits a batch into slot-sized chunks, hashed in parallel on idle workers (small ones here). */
  async function hashAll(blocks: readonly Uint8Array[], zeroFlags: boolean): Promise<Array<Uint8Array | null>> {
    if (closed) throw new InputError('the hashing pool is closed');
    const tooLarge = blocks.find((block) => block.length > slotBytes);
    if (tooLarge)
      throw new InputError(`a block of ${tooLarge.length} bytes exceeds the pool's ${slotBytes}-byte slots`);
    if (inline && blocks.reduce((sum, block) => sum + block.length, 0) <= INLINE_BYTES) {
      return blocks.map((block) => (zeroFlags && isZeroBlock(block) ? null : inline(block)));
    }
    const chunks: Array<Promise<Array<Uint8Array | null>>> = [];
    let start = 0;
    let bytes = 0;
    for (let i = 0; i < blocks.length; i++) {
      const length = blocks[i]!.length;
      if (bytes + length > slotBytes || i - start >= maxBlocks) {
        chunks.push(hashChunk(blocks.slice(start, i), zeroFlags));
        start = i;
        bytes = 0;
      }
      bytes += length;
    }
    if (start < blocks.length) chunks.push(hashChunk(blocks.slice(start), zeroFlags));
    return (await Promise.all(chunks)).flat();
  }

  return {
    algorithm,
    digestLength,
    async hash(blocks) {
      return (await hashAll(blocks, false)) as Uint8Array[];
    },
    hashOrZero(blocks) {
      return hashAll(blocks, true);
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
      await Promise.all(workers.map(({ worker }) => worker.terminate()));
    },
  };
}
