// Worker thread of the hashing pool (plain JavaScript so it loads the same way from src/ and
// dist/). It hashes blocks that lie in a SharedArrayBuffer and writes their digests into another.
// Each buffer is sent once; a job names it by id, with the blocks' offsets and lengths. xxh128
// runs on our WebAssembly SIMD kernel (xxh3/), in place when the buffer is a hash memory;
// hash-wasm where SIMD is missing. Both give the same digests.
import { createHash } from 'node:crypto';
import { readSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { createBLAKE3, createXXHash128 } from 'hash-wasm';
import { bindXxh128, createXxh128, xxh3Module } from './xxh3/xxh3.js';

const { kind, thread = 0, digestLength } = workerData;
const simd = kind === 'xxh128' && xxh3Module() !== null;
const wasm =
  kind === 'xxh128' && !simd ? await createXXHash128() : kind === 'blake3' ? await createBLAKE3() : undefined;
/** For xxh128 blocks outside a hash memory: copied into a private one. */
const copying = simd ? createXxh128() : undefined;
/** The shared buffers the pool sent, by id: a view, and the kernel bound to it when it is a hash memory. */
const buffers = new Map();
/** The pool's output buffers, by slot number. */
const outputs = [];

function digestInto(view, output, at) {
  if (copying) return copying.digestInto(view, output, at);
  if (!wasm) return output.set(createHash('sha256').update(view).digest(), at);
  wasm.init();
  wasm.update(view);
  output.set(wasm.digest('binary'), at);
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

/**
 * Hashes the blocks at `places` ([offset, length] pairs) of a buffer the pool sent before into
 * the slot's output; with `zeroFlags`, an all-zero block is not hashed: its flag byte (after the
 * digests) is set.
 */
function hashJob(job) {
  const entry = buffers.get(job.buffer);
  if (!entry) throw new Error(`the pool named buffer ${job.buffer}, which this thread does not hold`);
  const { view, bound } = entry;
  const output = outputs[job.output];
  const places = job.places;
  const count = places.length / 2;
  const flags = job.zeroFlags ? count * digestLength : -1;
  for (let i = 0; i < count; i++) {
    const start = places[2 * i];
    const length = places[2 * i + 1];
    if (flags >= 0) {
      const zero = isZero(view.subarray(start, start + length));
      output[flags + i] = zero ? 1 : 0;
      if (zero) continue;
    }
    if (bound) bound.digestInto(start, length, output, i * digestLength);
    else digestInto(view.subarray(start, start + length), output, i * digestLength);
  }
}

/**
 * Reads the job's spans ([fd, position, length, offset] each; the descriptors are the source
 * reader's, shared by every thread of the process) into its buffer. Returns the failure to report
 * (the span's index, with the error or the bytes read before the file ended), or undefined.
 */
function readJob(job) {
  const { view } = buffers.get(job.buffer) ?? {};
  if (!view) throw new Error(`the pool named buffer ${job.buffer}, which this thread does not hold`);
  const reads = job.reads;
  for (let i = 0; i < reads.length / 4; i++) {
    const fd = reads[4 * i];
    const position = reads[4 * i + 1];
    const length = reads[4 * i + 2];
    const offset = reads[4 * i + 3];
    if (offset < 0 || offset + length > view.length)
      throw new Error(`a read of ${length} bytes at ${offset} overruns the buffer`);
    let got = 0;
    try {
      while (got < length) {
        const n = readSync(fd, view, offset + got, length - got, position + got);
        if (n === 0) return { id: job.id, span: i, got };
        got += n;
      }
    } catch (error) {
      return { id: job.id, span: i, error: { message: error.message, code: error.code } };
    }
  }
  return undefined;
}

parentPort.on('message', (message) => {
  if (message.id !== undefined) {
    const failed = message.reads ? readJob(message) : undefined;
    if (failed) return parentPort.postMessage(failed);
    hashJob(message);
    parentPort.postMessage(message.id);
  } else if (message.add !== undefined) {
    const bound = simd && message.memory ? bindXxh128(message.memory, thread) : undefined;
    buffers.set(message.add, { view: new Uint8Array(message.buffer), bound });
  } else if (message.drop !== undefined) {
    buffers.delete(message.drop);
  } else if (message.output !== undefined) {
    outputs[message.output] = new Uint8Array(message.buffer);
  }
});
parentPort.postMessage('ready');
