// Worker thread of the hashing pool (plain JavaScript so it loads the same way from src/ and
// dist/). It hashes blocks that the pool copied into a SharedArrayBuffer and writes their digests
// into another; messages carry only offsets and lengths.
import { createHash } from 'node:crypto';
import { parentPort, workerData } from 'node:worker_threads';
import { createBLAKE3, createXXHash128 } from 'hash-wasm';

const { kind } = workerData;
const wasm = kind === 'xxh128' ? await createXXHash128() : kind === 'blake3' ? await createBLAKE3() : undefined;

function digest(view) {
  if (!wasm) return createHash('sha256').update(view).digest();
  wasm.init();
  wasm.update(view);
  return wasm.digest('binary');
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
  // Blocks lie back to back in the pool's slot, or at `offsets` in a buffer the engine shares.
  // With `zeroFlags`, an all-zero block is not hashed: its flag byte (after the digests) is set.
  const input = new Uint8Array(job.input);
  const output = new Uint8Array(job.output);
  const flags = job.zeroFlags ? job.lengths.length * job.digestLength : -1;
  let at = 0;
  for (let i = 0; i < job.lengths.length; i++) {
    const length = job.lengths[i];
    const start = job.offsets ? job.offsets[i] : at;
    const view = input.subarray(start, start + length);
    at += length;
    if (flags >= 0) {
      const zero = isZero(view);
      output[flags + i] = zero ? 1 : 0;
      if (zero) continue;
    }
    output.set(digest(view), i * job.digestLength);
  }
  parentPort.postMessage(job.id);
});
parentPort.postMessage('ready');
