import type { BlockHasher } from './block-hasher.js';

interface Waiter {
  count: number;
  resolve(digests: Array<Uint8Array | null>): void;
  reject(error: unknown): void;
}

/** Most blocks merged into one call. */
const MAX_BLOCKS = 64;

/**
 * Wraps a hasher so that small calls made in the same turn of the event loop go to it as one
 * batch: for scattered single-block segments (tracked changes), where a thread pool would
 * otherwise pay a round trip per block. A batch leaves at the end of the turn, or at once when it
 * holds 64 blocks; while `maxInFlight` batches are being hashed, blocks wait for one to return.
 * `hash` goes through `hashOrZero` when the inner hasher has it (a zero block is then hashed on
 * the calling thread: rare, and it keeps one queue).
 */
export function coalescingHasher(inner: BlockHasher, maxInFlight = 2): BlockHasher {
  let blocks: Uint8Array[] = [];
  let waiters: Waiter[] = [];
  let scheduled = false;
  let inFlight = 0;

  const flush = () => {
    if (blocks.length === 0) return;
    const batch = blocks;
    const batchWaiters = waiters;
    blocks = [];
    waiters = [];
    inFlight++;
    const hashed = inner.hashOrZero ? inner.hashOrZero(batch) : inner.hash(batch);
    hashed.then(
      (digests) => {
        inFlight--;
        let at = 0;
        for (const waiter of batchWaiters) {
          waiter.resolve(digests.slice(at, at + waiter.count));
          at += waiter.count;
        }
        flush();
      },
      (error: unknown) => {
        inFlight--;
        for (const waiter of batchWaiters) waiter.reject(error);
        flush();
      },
    );
  };
  const schedule = () => {
    if (scheduled) return;
    scheduled = true;
    setImmediate(() => {
      scheduled = false;
      if (inFlight < maxInFlight) flush();
    });
  };
  const enqueue = (more: readonly Uint8Array[]): Promise<Array<Uint8Array | null>> => {
    if (more.length === 0) return Promise.resolve([]);
    return new Promise((resolve, reject) => {
      blocks.push(...more);
      waiters.push({ count: more.length, resolve, reject });
      if (blocks.length >= MAX_BLOCKS) flush();
      else schedule();
    });
  };
  const hashOrZero = inner.hashOrZero ? enqueue : undefined;

  return {
    algorithm: inner.algorithm,
    digestLength: inner.digestLength,
    async hash(more) {
      if (!inner.hashOrZero) return (await enqueue(more)) as Uint8Array[];
      const found = await enqueue(more);
      const zeros = more.filter((_, i) => found[i] === null);
      const zeroDigests = zeros.length > 0 ? await inner.hash(zeros) : [];
      let next = 0;
      return found.map((digest) => digest ?? zeroDigests[next++]!);
    },
    ...(hashOrZero ? { hashOrZero } : {}),
    ...(inner.allocate ? { allocate: (bytes: number) => inner.allocate!(bytes) } : {}),
  };
}
