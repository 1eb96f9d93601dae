// Worker thread of the hashing pool (plain JavaScript so it loads the same way from src/ and
// dist/). It hashes blocks that lie in a SharedArrayBuffer and writes their digests into another;
// messages carry only offsets and lengths. xxh128 runs on our WebAssembly SIMD kernel (xxh3/),
// in place when the blocks' buffer is a hash memory the message names; hash-wasm where SIMD is
// missing. Both give the same digests.
import { createHash } from 'node:crypto';
import { parentPort, workerData } from 'node:worker_threads';
import { createBLAKE3, createXXHash128 } from 'hash-wasm';
import { bindXxh128, createXxh128, xxh3Module } from './xxh3/xxh3.js';

const { kind, thread = 0 } = workerData;
const simd = kind === 'xxh128' && xxh3Module() !== null;
const wasm =
  kind === 'xxh128' && !simd ? await createXXHash128() : kind === 'blake3' ? await createBLAKE3() : undefined;
/** For xxh128 blocks outside a hash memory: copied into a private one. */
const copying = simd ? createXxh128() : undefined;
/** Instances bound to the hash memories that messages named, by id, the most recently used last. */
const bound = new Map();
const MAX_BOUND = 64;

function digestInto(view, output, at) {
  if (copying) return copying.digestInto(view, output, at);
  if (!wasm) return output.set(createHash('sha256').update(view).digest(), at);
  wasm.init();
  wasm.update(view);
  output.set(wasm.digest('binary'), at);
}

/** The kernel bound to the job's hash memory, if it names one (instantiated once per memory). */
function boundFor(job) {
  if (!simd || job.memory === undefined) return undefined;
  let entry = bound.get(job.memoryId);
  if (entry) {
    bound.delete(job.memoryId);
  } else {
    entry = bindXxh128(job.memory, thread);
    // The pool says when a memory is dropped; this cap only bounds what a missed notice could keep.
    if (bound.size >= MAX_BOUND) bound.delete(bound.keys().next().value);
  }
  bound.set(job.memoryId, entry);
  return entry;
}

const ZERO = Buffer.alloc(1024 * 1024);

/** True when every byte of the view is zero (memcmp against a zero page). */
function isZero(view) {
  const bytes = Buffer.from(view.buffer, view.byteOffset, view.byteLength);
  for (let at = 0; at < bytes.length; at += ZERO.length) {
    const end = Math.min(at + ZERO.length, bytes.length);
    if (bytes.compare(ZERO, 0, end - at, at, end) !== 0) return false;
  }
  return true;
}

parentPort.on('message', (job) => {
  if (job.drop !== undefined) {
    bound.delete(job.drop);
    return;
  }
  // Blocks lie back to back in the pool's slot, or at `offsets` in a buffer the engine shares.
  // With `zeroFlags`, an all-zero block is not hashed: its flag byte (after the digests) is set.
  const input = new Uint8Array(job.input);
  const output = new Uint8Array(job.output);
  const flags = job.zeroFlags ? job.lengths.length * job.digestLength : -1;
  const inPlace = boundFor(job);
  let at = 0;
  for (let i = 0; i < job.lengths.length; i++) {
    const length = job.lengths[i];
    const start = job.offsets ? job.offsets[i] : at;
    at += length;
    if (flags >= 0) {
      const zero = isZero(input.subarray(start, start + length));
      output[flags + i] = zero ? 1 : 0;
      if (zero) continue;
    }
    if (inPlace) inPlace.digestInto(start, length, output, i * job.digestLength);
    else digestInto(input.subarray(start, start + length), output, i * job.digestLength);
  }
  parentPort.postMessage(job.id);
});
parentPort.postMessage('ready');
