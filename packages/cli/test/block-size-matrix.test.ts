// Block size is a dimension users control (issue 11, defect 1): every size the job schema accepts
// replicates end to end in every mode, and the replica equals the source byte for byte.
import type { BlockHasher } from '@replikit/core';
import { createHashingPool } from '@replikit/dedup';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { CELL_MODES, expectedSecondMode, runCell, tracksByDefault } from './helpers/block-size-cell.js';
import { matrixLayout } from './helpers/block-size-layout.js';

/** Every power of two from 4 KiB to 16 MiB: what `blockSize` accepts. */
const BLOCK_SIZES = Array.from({ length: 13 }, (_, i) => 4096 * 2 ** i);

let hasher: BlockHasher;
let started = 0;
beforeAll(async () => {
  hasher = await createHashingPool({ algorithm: 'xxh128', threads: 2 });
  started = performance.now();
});
afterAll(async () => {
  console.log(
    `block-size matrix: ${BLOCK_SIZES.length * CELL_MODES.length + 1} cells in ${Math.round(performance.now() - started)} ms`,
  );
  await hasher.close?.();
});

// Cells run a few at a time: most of a cell's time is spent waiting for the disk (fsync).
describe.concurrent('block-size matrix: every block size × every mode replicates exactly', () => {
  for (const blockSize of BLOCK_SIZES) {
    const { size, initial, changes } = matrixLayout(blockSize);
    for (const mode of CELL_MODES) {
      it(`${blockSize / 1024} KiB blocks, ${mode}`, async ({ expect }) => {
        const result = await runCell({ blockSize, size, mode, initial, changes, hasher });
        expect(result.modes).toEqual(['full', expectedSecondMode(mode, tracksByDefault(mode))]);
        expect(result.replica).toEqual(['equal', 'equal']);
        if (mode === 'single-pass') expect(result.backup).toEqual(['equal', 'equal']);
      });
    }
  }

  it('16 MiB blocks over TLS: a whole block fits a frame through the TLS records', async ({ expect }) => {
    const blockSize = 16 * 1024 * 1024;
    const result = await runCell({ blockSize, mode: 'tcp', security: 'tls', hasher, ...matrixLayout(blockSize) });
    expect(result.modes).toEqual(['full', 'hash-diff']);
    expect(result.replica).toEqual(['equal', 'equal']);
  });
});
