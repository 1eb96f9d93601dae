// XXH3-128 (seed 0) on WebAssembly SIMD: the module built from xxh3.wat (see ../../scripts/build-xxh3.mjs),
// and the few helpers that run it. Plain JavaScript, so the hashing pool's worker loads it the same
// way from src/ and dist/. Types: xxh3.d.ts.
import { XXH3_WASM_BASE64 } from './xxh3-wasm.js';

/** Bytes at the end of every hash memory that belong to the module (see xxh3.d.ts). */
export const HASH_MEMORY_RESERVED = 8192;
/** Threads that may hash in one hash memory at once: each has its own 16-byte digest slot. */
export const HASH_MEMORY_THREADS = 256;

const PAGE = 65536;
const MAX_PAGES = 65536;
const DIGEST_SLOTS = 256;

// (module (func (result v128) (v128.const i64x2 0 0))): valid where WebAssembly SIMD is.
const SIMD_PROBE = new Uint8Array([
  0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 22, 1, 20, 0, 253, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 11,
]);

let compiled;

/** True when this runtime validates WebAssembly SIMD128 (V8 in Node 16.4 and later does). */
export function simdSupported() {
  return typeof WebAssembly === 'object' && WebAssembly.validate(SIMD_PROBE);
}

/** The compiled module, or `null` where WebAssembly SIMD or shared memories are missing. */
export function xxh3Module() {
  if (compiled !== undefined) return compiled;
  compiled = null;
  if (!simdSupported()) return compiled;
  try {
    const module = new WebAssembly.Module(Buffer.from(XXH3_WASM_BASE64, 'base64'));
    // Shared memories need SharedArrayBuffer: try one instance before promising anything.
    new WebAssembly.Instance(module, { env: { memory: newMemory(1), secret: PAGE - HASH_MEMORY_RESERVED } });
    compiled = module;
  } catch {
    compiled = null;
  }
  return compiled;
}

function newMemory(pages) {
  return new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true });
}

function checkLength(name, value, max) {
  if (!Number.isSafeInteger(value) || value < 0 || value > max) {
    throw new RangeError(`${name} must be an integer from 0 to ${max}, got ${value}`);
  }
}

const nativeFill = Buffer.prototype.fill;

/**
 * Copies `source` into `target` at `offset` with one native memcpy. TypedArray#set into shared
 * memory copies with relaxed atomic stores: ~14 GB/s here when both sides are aligned alike, ~2
 * when not, against 40+ for Buffer#fill with a value as long as the range.
 */
export function copyInto(target, offset, source) {
  const length = source.length;
  if (!Number.isSafeInteger(offset) || offset < 0 || offset > target.length - length) {
    throw new RangeError(`${length} bytes do not fit at ${offset} of ${target.length}`);
  }
  if (length < 256) target.set(source, offset);
  else nativeFill.call(target, source, offset, offset + length);
}

/** The largest buffer {@link createHashMemory} makes. */
export const MAX_HASH_MEMORY_BYTES = MAX_PAGES * PAGE - HASH_MEMORY_RESERVED;

/**
 * A shared WebAssembly memory with room for `bytes` bytes before the module's reserved tail; `view`
 * is that room, at offset 0 of the memory's buffer. The memory never grows, so `view` stays valid.
 */
export function createHashMemory(bytes) {
  checkLength('bytes', bytes, MAX_HASH_MEMORY_BYTES);
  const memory = newMemory(Math.max(1, Math.ceil((bytes + HASH_MEMORY_RESERVED) / PAGE)));
  return { memory, view: new Uint8Array(memory.buffer, 0, bytes) };
}

/**
 * Binds the module to a hash memory for one thread (`thread` picks its digest slot). Throws where
 * {@link xxh3Module} is `null`.
 */
export function bindXxh128(memory, thread = 0) {
  const module = xxh3Module();
  if (!module) throw new Error('WebAssembly SIMD is not available');
  checkLength('thread', thread, HASH_MEMORY_THREADS - 1);
  // The module's bytes: the last HASH_MEMORY_RESERVED of the memory (which never grows).
  const end = memory.buffer.byteLength - HASH_MEMORY_RESERVED;
  if (end < 0) throw new RangeError(`a hash memory has at least ${HASH_MEMORY_RESERVED} bytes`);
  const { xxh128 } = new WebAssembly.Instance(module, { env: { memory, secret: end } }).exports;
  const slot = end + DIGEST_SLOTS + 16 * thread;
  const digest = new Uint8Array(memory.buffer, slot, 16);
  return {
    digestInto(at, length, out, outAt = 0) {
      checkLength('length', length, end);
      if (!Number.isSafeInteger(at) || at < 0 || at > end - length) {
        throw new RangeError(`bytes ${at}..${at + length} are not in the memory's first ${end} bytes`);
      }
      if (!Number.isSafeInteger(outAt) || outAt < 0 || outAt > out.length - 16) {
        throw new RangeError(`no room for a 16-byte digest at ${outAt} of ${out.length} bytes`);
      }
      xxh128(at, length, slot);
      out.set(digest, outAt);
    },
  };
}

/**
 * A hasher for bytes anywhere: each input is copied into a private hash memory (grown to fit) and
 * hashed there. Throws where {@link xxh3Module} is `null`.
 */
export function createXxh128() {
  let capacity = -1;
  let heap;
  let bound;
  return {
    digestInto(data, out, outAt = 0) {
      if (data.length > capacity) {
        capacity = Math.max(data.length, 1024 * 1024);
        const { memory, view } = createHashMemory(capacity);
        heap = view;
        bound = bindXxh128(memory);
      }
      copyInto(heap, 0, data);
      bound.digestInto(0, data.length, out, outAt);
    },
    digest(data) {
      const out = new Uint8Array(16);
      this.digestInto(data, out, 0);
      return out;
    },
  };
}
