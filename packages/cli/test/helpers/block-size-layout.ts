import { testPattern } from '@replikit/core/testing';
import type { GuestWrite } from './block-size-cell.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** Text-like bytes (compressible), for codecs and deltas. */
export function textBytes(length: number, seed = 0): Uint8Array {
  const line = Buffer.from(`line ${seed} of a log file with status=200 and a request id\n`);
  const out = new Uint8Array(length);
  for (let at = 0; at < length; at += line.length) out.set(line.subarray(0, Math.min(line.length, length - at)), at);
  return out;
}

/**
 * The disk and writes of a matrix cell of `blockSize`: a few blocks (at least 5 MiB, so reads
 * cross the engine's 1 MiB and 4 MiB buffers), a size that is not a multiple of the block size,
 * and writes placed on the boundaries that used to cut blocks short:
 *
 * - before the first run: random and text data in block 0, data in block 1 after a first MiB
 *   of zeros, data around 3 MiB, and (for blocks up to 1 MiB) data in the last, short block;
 * - between runs: block 0 zeroed whole, a write across the boundary of blocks 1 and 2, writes
 *   across the 1 MiB and 4 MiB read boundaries, a write into block 1 after its zero first MiB, a
 *   write at the end of the last block (past its zero first MiB for blocks of 2 MiB and more),
 *   and zeros over the data around 3 MiB.
 */
export function matrixLayout(blockSize: number): { size: number; initial: GuestWrite[]; changes: GuestWrite[] } {
  const B = blockSize;
  const size = B >= 2 * MiB ? 2 * B + B / 2 + 512 : 5 * MiB + B / 2 + 512;
  const initial: GuestWrite[] = [
    { offset: 0, data: testPattern(1, B / 2 + 4096) },
    { offset: B / 2 + 4096, data: textBytes(Math.min(B / 2, 256 * KiB), 1) },
    { offset: B + MiB + 4096, data: testPattern(2, 64 * KiB) },
    { offset: 3 * MiB + 777, data: testPattern(3, 200 * KiB) },
  ];
  if (B <= MiB) initial.push({ offset: size - 1000, data: testPattern(4, 1000) });
  const changes: GuestWrite[] = [
    { offset: 0, data: new Uint8Array(Math.min(B, size)) },
    { offset: 2 * B - 2048, data: testPattern(5, 4096) },
    { offset: MiB - 100, data: testPattern(6, 300) },
    { offset: 4 * MiB - 50, data: testPattern(7, 100) },
    { offset: B + MiB + 200 * KiB, data: testPattern(8, 4096) },
    { offset: size - 300, data: testPattern(9, 300) },
    { offset: 3 * MiB + 777, data: new Uint8Array(100 * KiB) },
  ];
  return { size, initial, changes };
}
