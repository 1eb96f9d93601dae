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

parentPort.on('message', (job) => {
  // Blocks lie back to back in the pool's slot, or at `offsets` in a buffer the engine shares.
  const input = new Uint8Array(job.input);
  const output = new Uint8Array(job.output);
  let at = 0;
  for (let i = 0; i < job.lengths.length; i++) {
    const length = job.lengths[i];
    const start = job.offsets ? job.offsets[i] : at;
    output.set(digest(input.subarray(start, start + length)), i * job.digestLength);
    at += length;
  }
  parentPort.postMessage(job.id);
});
parentPort.postMessage('ready');
