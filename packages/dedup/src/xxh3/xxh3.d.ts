// Types of xxh3.js (plain JavaScript so the hashing pool's worker can load it from src/ and dist/).

/**
 * A shared `WebAssembly.Memory` (typed loosely: this project's TypeScript libraries have no
 * WebAssembly types). Its last {@link HASH_MEMORY_RESERVED} bytes belong to the XXH3 module.
 */
export interface HashMemory {
  readonly buffer: SharedArrayBuffer;
}

/**
 * Bytes at the end of every hash memory that belong to the module: the XXH3 secret in the first
 * 192 (written, always with the same bytes, by each instantiation) and a 16-byte digest slot per
 * thread from 256 on. Blocks to hash lie before them, so a buffer can start at offset 0.
 */
export const HASH_MEMORY_RESERVED: number;
/** Threads that may hash in one hash memory at once (each has its own digest slot). */
export const HASH_MEMORY_THREADS: number;
/** The largest buffer {@link createHashMemory} makes (4 GiB less the reserved tail). */
export const MAX_HASH_MEMORY_BYTES: number;

/**
 * Copies `source` into `target` at `offset` with one native memcpy (`TypedArray#set` into shared
 * memory is several times slower, and byte by byte when the two are not aligned alike).
 *
 * @throws RangeError when `source` does not fit at `offset`.
 */
export function copyInto(target: Uint8Array, offset: number, source: Uint8Array): void;

/** True when this runtime validates a WebAssembly SIMD128 module. */
export function simdSupported(): boolean;

/**
 * The compiled XXH3-128 module (opaque), or `null` where WebAssembly SIMD or shared memories are
 * missing; then callers keep hash-wasm's xxh128, which gives the same digests.
 */
export function xxh3Module(): object | null;

/**
 * A shared memory with room for `bytes` bytes before the reserved tail: `view` is that room, at
 * offset 0 of `memory.buffer` (as the engine expects of `allocate()`d buffers).
 *
 * @throws RangeError when `bytes` is not an integer from 0 to {@link MAX_HASH_MEMORY_BYTES}.
 */
export function createHashMemory(bytes: number): { memory: HashMemory; view: Uint8Array };

/** XXH3-128 bound to one hash memory, for one thread. */
export interface BoundXxh128 {
  /**
   * Hashes the `length` bytes at byte `at` of the memory's buffer and writes the 16-byte digest
   * (canonical: big-endian high half, then low half, as hash-wasm's `digest('binary')`) at
   * `outAt` of `out`.
   *
   * @throws RangeError when the bytes are not in the memory (or reach its reserved tail), or
   * `out` has no room at `outAt`.
   */
  digestInto(at: number, length: number, out: Uint8Array, outAt?: number): void;
}

/**
 * Instantiates the module over `memory` for thread `thread` (0 to {@link HASH_MEMORY_THREADS} - 1).
 *
 * @throws Error where {@link xxh3Module} is `null`; RangeError for a bad `thread`, or a memory
 * smaller than {@link HASH_MEMORY_RESERVED}.
 */
export function bindXxh128(memory: HashMemory, thread?: number): BoundXxh128;

/** XXH3-128 of any bytes, copied first into a private hash memory. */
export interface Xxh128 {
  /** Writes the 16-byte canonical digest of `data` at `outAt` of `out`. */
  digestInto(data: Uint8Array, out: Uint8Array, outAt?: number): void;
  /** The 16-byte canonical digest of `data`. */
  digest(data: Uint8Array): Uint8Array;
}

/**
 * A hasher for bytes anywhere (each input is copied once into wasm memory).
 *
 * @example
 * ```ts
 * const xxh = createXxh128();
 * const digest = xxh.digest(new TextEncoder().encode('abc'));
 * ```
 * @throws Error where {@link xxh3Module} is `null`.
 */
export function createXxh128(): Xxh128;
