// A property of every replication (issue 11, defect 1): whatever the block size, the disk size,
// the guest's writes and the mode, the replica equals the guest's disk after each run.
//
// The cases are drawn from a seed, printed in each case's name. To replay one case:
//   REPLIKIT_PROPERTY_SEED=<case seed> REPLIKIT_PROPERTY_CASES=1 npx vitest run packages/cli/test/block-size-property.test.ts
import type { BlockHasher } from '@replikit/core';
import { createNodeHasher } from '@replikit/core/internal';
import { createHashingPool } from '@replikit/dedup';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { CELL_MODES, type CellMode, expectedSecondMode, type GuestWrite, runCell } from './helpers/block-size-cell.js';
import { textBytes } from './helpers/block-size-layout.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const SEED = Number(process.env.REPLIKIT_PROPERTY_SEED ?? Math.floor(Math.random() * 2 ** 32)) >>> 0;
const CASES = Number(process.env.REPLIKIT_PROPERTY_CASES ?? 200);

/** A small seeded generator (mulberry32): the same seed draws the same case. */
function generator(seed: number) {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
  const int = (min: number, max: number) => min + Math.floor(next() * (max - min + 1));
  const pick = <T>(items: readonly T[]): T => items[int(0, items.length - 1)]!;
  const bytes = (length: number) => {
    const out = new Uint8Array(length);
    for (let at = 0; at < length; at += 4) {
      const word = (next() * 2 ** 32) >>> 0;
      for (let k = 0; k < 4 && at + k < length; k++) out[at + k] = (word >>> (8 * k)) & 0xff;
    }
    return out;
  };
  return { next, int, pick, bytes };
}

/** One drawn case. */
interface Case {
  seed: number;
  blockSize: number;
  size: number;
  mode: CellMode;
  tracking: boolean;
  hasher: 'pool' | 'node';
  security: 'tcp' | 'tls';
  initial: GuestWrite[];
  changes: GuestWrite[];
}

/** Draws a case from its seed: small disks, writes that favour block and read-buffer boundaries. */
function drawCase(seed: number): Case {
  const g = generator(seed);
  const blockSize = 4096 * 2 ** g.int(0, 12);
  // A few blocks, or up to 5 MiB of small blocks (reads then cross the engine's 1 and 4 MiB
  // buffers); mostly under 12 MiB (a 16 MiB block may be the whole, short, disk).
  const few = 3 * blockSize + blockSize / 2;
  const limit = g.next() < 0.1 ? few : Math.min(g.next() < 0.5 ? few : Math.max(few, 5 * MiB), 12 * MiB);
  const size = g.pick([
    () => g.int(1, limit),
    () => Math.max(1, Math.min(limit, g.int(1, 3) * blockSize + g.int(-4096, 4096))),
    () => g.int(1, Math.ceil(limit / 4096)) * 4096,
  ])();
  const mode = g.pick(CELL_MODES);
  const tracking = mode === 'tracked' ? true : mode === 'hash-diff' ? false : g.next() < 0.5;
  const offset = () => {
    const near = g.pick([
      () => g.int(0, Math.floor(size / blockSize)) * blockSize,
      () => g.int(0, Math.floor(size / MiB)) * MiB,
      () => g.int(0, Math.floor(size / (4 * MiB))) * 4 * MiB,
      () => size,
      () => g.int(0, size),
    ])();
    return Math.max(0, Math.min(size - 1, near + g.int(-8192, 8192)));
  };
  const write = (): GuestWrite => {
    const at = offset();
    const length = Math.min(
      size - at,
      g.pick([() => g.int(1, 8192), () => g.int(1, Math.min(blockSize + 8192, 1536 * KiB)), () => blockSize])(),
    );
    const kind = g.int(0, 9);
    const data = kind < 6 ? g.bytes(length) : kind < 8 ? new Uint8Array(length) : textBytes(length, seed);
    return { offset: at, data };
  };
  const writes = (max: number) => Array.from({ length: g.int(0, max) }, write);
  return {
    seed,
    blockSize,
    size,
    mode,
    tracking,
    hasher: g.next() < 0.7 ? 'pool' : 'node',
    security: g.next() < 0.7 ? 'tcp' : 'tls',
    initial: writes(6),
    changes: writes(6),
  };
}

function describeCase(c: Case): string {
  const block = c.blockSize >= MiB ? `${c.blockSize / MiB} MiB` : `${c.blockSize / KiB} KiB`;
  const how = c.mode === 'tcp' ? c.security : c.mode;
  return `seed ${c.seed}: ${block} blocks, ${c.size} B disk, ${how}${c.tracking ? ' (tracked VM)' : ''}, ${c.hasher} hasher, ${c.initial.length}+${c.changes.length} writes`;
}

let pool: BlockHasher;
let started = 0;
beforeAll(async () => {
  pool = await createHashingPool({ algorithm: 'xxh128', threads: 2 });
  started = performance.now();
});
afterAll(async () => {
  console.log(`block-size property: ${CASES} cases from seed ${SEED} in ${Math.round(performance.now() - started)} ms`);
  await pool.close?.();
});

describe.concurrent(`block-size property: random sizes, writes and modes (seed ${SEED})`, () => {
  const node = createNodeHasher('sha256');
  for (let i = 0; i < CASES; i++) {
    const c = drawCase((SEED + i) >>> 0);
    it(describeCase(c), async ({ expect }) => {
      const replay = `replay: REPLIKIT_PROPERTY_SEED=${c.seed} REPLIKIT_PROPERTY_CASES=1`;
      const result = await runCell({ ...c, hasher: c.hasher === 'pool' ? pool : node });
      expect(result.modes, replay).toEqual(['full', expectedSecondMode(c.mode, c.tracking)]);
      expect(result.replica, replay).toEqual(['equal', 'equal']);
      if (c.mode === 'single-pass') expect(result.backup, replay).toEqual(['equal', 'equal']);
    });
  }
});
