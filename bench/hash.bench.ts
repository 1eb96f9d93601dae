// xxh128 throughput on 64 KiB blocks: hash-wasm's (the previous kernel, still the fallback where
// WebAssembly SIMD is missing) against @replikit/dedup's own XXH3-128 on WebAssembly SIMD, on one
// thread, in place (blocks already in a hash memory, as the pool's workers see them) and copied
// (any Uint8Array, copied once into wasm memory); then the hashing pool's throughput over
// `--total` bytes of blocks, in place (buffers from `allocate()`, as the engine reads into) and
// copied into its slots. Digests of both kernels are compared on every block of the first pass.
// Flags: --threads=2 --total=2GiB --seconds=1 (per single-thread measurement)
import { randomFillSync } from 'node:crypto';
import { formatBytes, InputError, parseSize } from '@replikit/core';
import { createHashingPool } from '@replikit/dedup';
import { createXXHash128 } from 'hash-wasm';
import { bindXxh128, createHashMemory, createXxh128, xxh3Module } from '../packages/dedup/src/xxh3/xxh3.js';

const BLOCK = 64 * 1024;
const GiB = 1024 ** 3;

function flag(flags: string[], name: string, fallback: string): string {
  return flags.find((f) => f.startsWith(`--${name}=`))?.split('=')[1] ?? fallback;
}

/** Calls `hashBlock(i)` over and over for about `seconds` (after a warm-up); GiB/s. */
function rate(seconds: number, hashBlock: (index: number) => void): number {
  for (let i = 0; i < 2000; i++) hashBlock(i);
  let blocks = 0;
  const start = process.hrtime.bigint();
  let elapsed = 0;
  while (elapsed < seconds) {
    for (let i = 0; i < 256; i++) hashBlock(blocks++);
    elapsed = Number(process.hrtime.bigint() - start) / 1e9;
  }
  return (blocks * BLOCK) / GiB / elapsed;
}

const line = (label: string, value: string) => console.log(`${label.padEnd(52)} ${value}`);

/** The benchmark (`npm run bench -- hash`). */
export async function run(flags: string[]): Promise<void> {
  const threads = Number(flag(flags, 'threads', '2'));
  const total = parseSize(flag(flags, 'total', '2GiB'));
  const seconds = Number(flag(flags, 'seconds', '1'));
  if (!Number.isSafeInteger(threads) || threads < 1 || threads > 256) throw new InputError('--threads: 1 to 256');
  if (!(seconds > 0 && seconds <= 60)) throw new InputError('--seconds: more than 0, at most 60');
  if (xxh3Module() === null) {
    console.log('WebAssembly SIMD is not available here: the pool uses hash-wasm; nothing to compare');
    return;
  }

  // 8 MiB of blocks (128): larger than L2, like blocks that were just read.
  const count = 128;
  const plain = randomFillSync(new Uint8Array(count * BLOCK));
  const { memory, view } = createHashMemory(count * BLOCK);
  view.set(plain);
  const reference = await createXXHash128();
  const bound = bindXxh128(memory);
  const copying = createXxh128();
  const out = new Uint8Array(16);
  for (let i = 0; i < count; i++) {
    const block = plain.subarray(i * BLOCK, (i + 1) * BLOCK);
    reference.init();
    reference.update(block);
    bound.digestInto(view.byteOffset + i * BLOCK, BLOCK, out);
    if (!Buffer.from(out).equals(reference.digest('binary'))) throw new Error(`digests differ on block ${i}`);
  }

  console.log(`xxh128 of 64 KiB blocks, one thread (${count} blocks, ${formatBytes(count * BLOCK)}, round robin):`);
  const old = rate(seconds, (i) => {
    const k = i % count;
    reference.init();
    reference.update(plain.subarray(k * BLOCK, (k + 1) * BLOCK));
    reference.digest('binary');
  });
  line('  hash-wasm createXXHash128', `${old.toFixed(2)} GiB/s`);
  const inPlace = rate(seconds, (i) => bound.digestInto(view.byteOffset + (i % count) * BLOCK, BLOCK, out));
  line('  dedup XXH3-128 SIMD, in place (hash memory)', `${inPlace.toFixed(2)} GiB/s (${(inPlace / old).toFixed(2)}x)`);
  const copied = rate(seconds, (i) => {
    const k = i % count;
    copying.digestInto(plain.subarray(k * BLOCK, (k + 1) * BLOCK), out);
  });
  line('  dedup XXH3-128 SIMD, copied into wasm memory', `${copied.toFixed(2)} GiB/s (${(copied / old).toFixed(2)}x)`);

  // The pool: batches of 16 blocks (1 MiB, the engine's read size), `threads * 2` in flight.
  const pool = await createHashingPool({ algorithm: 'xxh128', threads });
  try {
    const buffers = Array.from({ length: 16 }, () => randomFillSync(pool.allocate!(16 * BLOCK)));
    const copies = buffers.map((buffer) => buffer.slice());
    const batches = Math.max(1, Math.round(total / (16 * BLOCK)));
    const blocksOf = (buffer: Uint8Array) =>
      Array.from({ length: 16 }, (_, i) => buffer.subarray(i * BLOCK, (i + 1) * BLOCK));
    console.log(`hashing pool, ${threads} threads, ${formatBytes(batches * 16 * BLOCK)} in batches of 1 MiB:`);
    for (const [label, sources] of [
      ['in place (buffers from allocate())', buffers],
      ['copied into its slots', copies],
    ] as const) {
      const inputs = sources.map(blocksOf);
      await Promise.all(inputs.map((blocks) => pool.hash(blocks))); // warm-up
      let next = 0;
      const start = process.hrtime.bigint();
      await Promise.all(
        Array.from({ length: threads * 2 }, async () => {
          while (next < batches) await pool.hash(inputs[next++ % inputs.length]!);
        }),
      );
      const elapsed = Number(process.hrtime.bigint() - start) / 1e9;
      const gib = (batches * 16 * BLOCK) / GiB / elapsed;
      line(`  ${label}`, `${gib.toFixed(2)} GiB/s (${(gib / threads).toFixed(2)} GiB/s per thread)`);
    }
  } finally {
    await pool.close?.();
  }
}
