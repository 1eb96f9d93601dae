import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type DiskWriter, FormatError, isReplikitError } from '@replikit/core';
import { checkRange } from '@replikit/core/internal';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkInside } from '../src/byte-source.js';
import {
  type ByteSource,
  crc32c,
  createVhd,
  createVhdx,
  type ImageReader,
  openSource,
  openVhd,
  openVhdx,
  readXva,
  xvaStream,
} from '../src/index.js';
import { vhdChecksum } from '../src/vhd/vhd-structs.js';
import { pattern, tempDir } from './helpers/qemu.js';

/**
 * Fuzz/property tests of every parser: small valid images (made by replikit's writers) are
 * mutated in memory — bytes set, bits flipped, 32-bit fields replaced by edge values, the file
 * cut short — with checksums optionally recomputed so the mutation reaches the deeper parsers.
 * The only outcome allowed besides success is a FormatError with a one-line message; reads are
 * checked to stay inside the file and to be no larger than it.
 */

const KiB = 1024;
const MiB = 1024 * KiB;
let cleanup: () => Promise<void>;
const images: Record<string, Uint8Array> = {};
let casesRun = 0;

interface Patch {
  offset: number;
  bytes: number[];
}

/** A ByteSource over `base` with `patches` applied and its length cut to `length`, watching every read. */
function mutated(base: Uint8Array, patches: Patch[], length: number, name: string): ByteSource {
  const source: ByteSource = {
    name,
    size: length,
    async readInto(target, offset, what) {
      checkInside(source, offset, target.length, what);
      // a parser must never ask for more than the file holds (no allocation driven by a header alone)
      expect(target.length).toBeLessThanOrEqual(length);
      target.set(base.subarray(offset, offset + target.length));
      for (const p of patches) {
        p.bytes.forEach((b, i) => {
          const at = p.offset + i - offset;
          if (at >= 0 && at < target.length) target[at] = b;
        });
      }
    },
    async close() {},
  };
  return source;
}

function expectFormatError(error: unknown): void {
  if (!isReplikitError(error, 'E_FORMAT')) throw error;
  expect(error.message.length).toBeGreaterThan(10);
  expect(error.message).not.toContain('\n');
}

async function exercise(open: () => Promise<ImageReader>): Promise<void> {
  casesRun++;
  let reader: ImageReader;
  try {
    reader = await open();
  } catch (error) {
    expectFormatError(error);
    return;
  }
  try {
    const n = Math.min(reader.size, MiB);
    await reader.read(0, n);
    if (reader.size > n) await reader.read(reader.size - n, n);
    let previousEnd = 0;
    let count = 0;
    for await (const e of reader.allocated()) {
      expect(e.offset).toBeGreaterThanOrEqual(previousEnd);
      expect(e.offset + e.length).toBeLessThanOrEqual(reader.size);
      previousEnd = e.offset + e.length;
      if (++count > 1_000_000) throw new Error('allocated() does not end');
    }
  } catch (error) {
    expectFormatError(error);
  } finally {
    await reader.close();
  }
}

const EDGE_U32 = [0, 1, 0x7fffffff, 0x80000000, 0xffffffff, 0xfffffffe, 512, 0x100000, 0x200000];

/** A mutation: anywhere, or (more often) inside one of the image's structures. */
function patchArb(size: number, hot: [number, number][]): fc.Arbitrary<Patch> {
  const offset = fc.oneof(
    { weight: 1, arbitrary: fc.integer({ min: 0, max: size - 1 }) },
    { weight: 4, arbitrary: fc.constantFrom(...hot).chain(([a, b]) => fc.integer({ min: a, max: b - 1 })) },
  );
  return fc.oneof(
    fc.record({ offset, bytes: fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 1, maxLength: 4 }) }),
    fc.record({
      offset,
      bytes: fc.constantFrom(...EDGE_U32).chain((v) =>
        fc.boolean().map((le) => {
          const b = [(v >>> 24) & 255, (v >>> 16) & 255, (v >>> 8) & 255, v & 255];
          return le ? b.reverse() : b;
        }),
      ),
    }),
  );
}

interface Case {
  patches: Patch[];
  cut: number | undefined;
  fixChecksums: boolean;
}

function caseArb(size: number, hot: [number, number][]): fc.Arbitrary<Case> {
  return fc.record({
    patches: fc.array(patchArb(size, hot), { minLength: 1, maxLength: 4 }),
    cut: fc.option(fc.integer({ min: 0, max: size - 1 }), { freq: 8 }),
    fixChecksums: fc.boolean(),
  });
}

/** Applies patches to a copy of a structure and returns patches for its recomputed checksum. */
function reseal(
  base: Uint8Array,
  patches: Patch[],
  start: number,
  length: number,
  at: number,
  kind: 'vhd' | 'crc32c',
): Patch[] {
  if (start + length > base.length) return [];
  const copy = base.slice(start, start + length);
  for (const p of patches) {
    p.bytes.forEach((b, i) => {
      const x = p.offset + i - start;
      if (x >= 0 && x < length) copy[x] = b;
    });
  }
  const view = new DataView(copy.buffer);
  let sum: number;
  if (kind === 'vhd') {
    sum = vhdChecksum(copy, at);
    return [{ offset: start + at, bytes: [(sum >>> 24) & 255, (sum >>> 16) & 255, (sum >>> 8) & 255, sum & 255] }];
  }
  view.setUint32(at, 0, true);
  sum = crc32c(copy);
  return [{ offset: start + at, bytes: [sum & 255, (sum >>> 8) & 255, (sum >>> 16) & 255, (sum >>> 24) & 255] }];
}

const refuseParent = async (): Promise<ImageReader> => {
  throw new FormatError('fuzz: parents are not opened');
};

beforeAll(async () => {
  const t = await tempDir();
  cleanup = t.cleanup;
  const dir = t.dir;
  const vhd = await createVhd(join(dir, 'd.vhd'), { size: 2 * MiB + 3 * 512, blockSize: 512 * KiB });
  await vhd.write(1000, pattern(700 * KiB, 1));
  await vhd.close();
  const parentVhd = await openVhd(join(dir, 'd.vhd'));
  const childVhd = await createVhd(join(dir, 'c.vhd'), {
    size: parentVhd.size,
    parent: parentVhd,
    blockSize: 512 * KiB,
  });
  await childVhd.write(3 * 512 + 17, pattern(5000, 2));
  await childVhd.close();
  await parentVhd.close();
  const vhdx = await createVhdx(join(dir, 'd.vhdx'), { size: 3 * MiB + 4096, blockSize: MiB });
  await vhdx.write(4096, pattern(64 * KiB, 3));
  await vhdx.write(3 * MiB, pattern(4096, 4));
  await vhdx.close();
  const parentVhdx = await openVhdx(join(dir, 'd.vhdx'));
  const childVhdx = await createVhdx(join(dir, 'c.vhdx'), {
    size: parentVhdx.size,
    parent: parentVhdx,
    blockSize: MiB,
  });
  await childVhdx.write(MiB + 512 * 3, pattern(3000, 5));
  await childVhdx.close();
  await parentVhdx.close();
  for (const name of ['d.vhd', 'c.vhd', 'd.vhdx', 'c.vhdx'])
    images[name] = new Uint8Array(await readFile(join(dir, name)));
  // a small XVA: one 80 KiB disk and one 20 KiB disk, in memory
  const disk = (size: number, seed: number): ImageReader => {
    const bytes = pattern(size, seed);
    return {
      size,
      blockSize: 64 * KiB,
      info: {} as ImageReader['info'],
      parent: undefined,
      async *allocated() {
        yield { offset: 0, length: size };
      },
      async read(offset, length) {
        return bytes.slice(offset, offset + length);
      },
      async readInto(offset, target) {
        target.set(bytes.subarray(offset, offset + target.length));
      },
      async close() {},
    };
  };
  const parts: Uint8Array[] = [];
  for await (const p of xvaStream({
    vm: { name: 'fuzz' },
    disks: [{ reader: disk(80 * KiB, 6) }, { reader: disk(20 * KiB, 7) }],
    mtime: 0,
  })) {
    parts.push(p);
  }
  images.xva = new Uint8Array(Buffer.concat(parts));
});
afterAll(async () => cleanup?.());

/** The structures of a dynamic VHD made by replikit: footer copy, header, BAT, locators, first bitmap. */
function vhdHot(image: Uint8Array): [number, number][] {
  return [
    [0, 512],
    [512, 1536],
    [1536, 4096],
    [4096, 4096 + 512],
    [image.length - 512, image.length],
  ];
}

async function vhdCase(name: string, c: Case, parent: () => Promise<ImageReader>): Promise<void> {
  const base = images[name]!;
  const extra = c.fixChecksums
    ? [
        ...reseal(base, c.patches, 0, 512, 64, 'vhd'),
        ...reseal(base, c.patches, 512, 1024, 36, 'vhd'),
        ...reseal(base, c.patches, base.length - 512, 512, 64, 'vhd'),
      ]
    : [];
  const source = mutated(base, [...c.patches, ...extra], c.cut ?? base.length, name);
  await exercise(() => openSource(source, { resolveParent: parent }));
}

const VHDX_HOT: [number, number][] = [
  [0, 16],
  [64 * KiB, 64 * KiB + 128],
  [128 * KiB, 128 * KiB + 128],
  [192 * KiB, 192 * KiB + 96],
  [256 * KiB, 256 * KiB + 96],
  [MiB, MiB + 4096], // log
  [2 * MiB, 2 * MiB + 256], // metadata table
  [2 * MiB + 64 * KiB, 2 * MiB + 64 * KiB + 512], // metadata items
  [3 * MiB, 3 * MiB + 64], // BAT
];

async function vhdxCase(name: string, c: Case, parent: () => Promise<ImageReader>): Promise<void> {
  const base = images[name]!;
  const extra = c.fixChecksums
    ? [
        ...reseal(base, c.patches, 64 * KiB, 4096, 4, 'crc32c'),
        ...reseal(base, c.patches, 128 * KiB, 4096, 4, 'crc32c'),
        ...reseal(base, c.patches, 192 * KiB, 64 * KiB, 4, 'crc32c'),
      ]
    : [];
  const source = mutated(base, [...c.patches, ...extra], c.cut ?? base.length, name);
  await exercise(() => openSource(source, { resolveParent: parent }));
}

const RUNS = { vhd: 2400, vhdDiff: 1400, vhdx: 2400, vhdxDiff: 1400, xva: 2400 };

describe('fuzz: mutated images give a result or a FormatError, nothing else', () => {
  it(`VHD dynamic (${RUNS.vhd} cases)`, async () => {
    const base = images['d.vhd']!;
    await fc.assert(
      fc.asyncProperty(caseArb(base.length, vhdHot(base)), (c) => vhdCase('d.vhd', c, refuseParent)),
      { numRuns: RUNS.vhd },
    );
  });

  it(`VHD differencing, parent from memory (${RUNS.vhdDiff} cases)`, async () => {
    const base = images['c.vhd']!;
    const parent = () => openSource(mutated(images['d.vhd']!, [], images['d.vhd']!.length, 'd.vhd'));
    await fc.assert(
      fc.asyncProperty(caseArb(base.length, vhdHot(base)), (c) => vhdCase('c.vhd', c, parent)),
      { numRuns: RUNS.vhdDiff },
    );
  });

  it(`VHDX dynamic (${RUNS.vhdx} cases)`, async () => {
    const base = images['d.vhdx']!;
    await fc.assert(
      fc.asyncProperty(caseArb(base.length, VHDX_HOT), (c) => vhdxCase('d.vhdx', c, refuseParent)),
      { numRuns: RUNS.vhdx },
    );
  });

  it(`VHDX differencing with sector bitmaps, parent from memory (${RUNS.vhdxDiff} cases)`, async () => {
    const base = images['c.vhdx']!;
    const parent = () => openSource(mutated(images['d.vhdx']!, [], images['d.vhdx']!.length, 'd.vhdx'));
    const bitmapHot: [number, number][] = [...VHDX_HOT, [base.length - 2 * MiB, base.length - 2 * MiB + 64]];
    await fc.assert(
      fc.asyncProperty(caseArb(base.length, bitmapHot), (c) => vhdxCase('c.vhdx', c, parent)),
      { numRuns: RUNS.vhdxDiff },
    );
  });

  it(`XVA tar records, ova.xml and chunks (${RUNS.xva} cases)`, async () => {
    const base = images.xva!;
    // tar headers of every entry, and the ova.xml text
    const hot: [number, number][] = [[512, 1536]];
    for (let at = 0; at + 512 <= base.length; at += 512) {
      if (base[at + 257] === 0x75 && base[at + 258] === 0x73) hot.push([at, at + 512]); // 'us'tar
    }
    await fc.assert(
      fc.asyncProperty(caseArb(base.length, hot), async (c) => {
        casesRun++;
        const length = c.cut ?? base.length;
        const bytes = base.slice(0, length);
        for (const p of c.patches) {
          p.bytes.forEach((b, i) => {
            if (p.offset + i < length) bytes[p.offset + i] = b;
          });
        }
        if (c.fixChecksums) {
          for (const [a] of hot.slice(1)) {
            if (a + 512 > length) continue;
            let sum = 0;
            for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : bytes[a + i]!;
            bytes.set(new TextEncoder().encode(`${sum.toString(8).padStart(6, '0')}\0 `), a + 148);
          }
        }
        async function* stream() {
          for (let at = 0; at < bytes.length; at += 16 * KiB) yield bytes.subarray(at, at + 16 * KiB);
        }
        const writer = (size: number): DiskWriter => ({
          size,
          async write(offset, data) {
            checkRange(size, offset, data.length, 'fuzz writer');
          },
          async writeZeroes() {},
          async flush() {},
          async close() {},
        });
        try {
          await readXva(stream(), { name: 'fuzz.xva', openWriter: async (vdi) => writer(vdi.size) });
        } catch (error) {
          expectFormatError(error);
        }
      }),
      { numRuns: RUNS.xva },
    );
    const total = Object.values(RUNS).reduce((a, b) => a + b, 0);
    expect(total).toBeGreaterThanOrEqual(10_000);
    expect(casesRun).toBeGreaterThanOrEqual(10_000);
    console.log(`fuzz: ${casesRun} cases run`);
  });
});
