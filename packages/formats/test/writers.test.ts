import { join } from 'node:path';
import type { DiskWriter } from '@replikit/core';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRaw, createVhd, createVhdx, openDisk, openVhd, openVhdx } from '../src/index.js';
import { pattern, qemuOk, requireQemu, tempDir } from './helpers/qemu.js';

/**
 * Model-based test of every writer: random unaligned writes and writeZeroes, mirrored in memory,
 * then the file is read back through replikit (and, for formats qemu-img reads, through
 * `qemu-img compare` against the model).
 */
const KiB = 1024;
const MiB = 1024 * KiB;
const SIZE = 3 * MiB + 5 * KiB;
let dir: string;
let cleanup: () => Promise<void>;
let n = 0;
beforeAll(async () => {
  await requireQemu();
  ({ dir, cleanup } = await tempDir());
});
afterAll(async () => cleanup?.());

type Op = { kind: 'write' | 'zero'; offset: number; length: number; seed: number };
const opArb: fc.Arbitrary<Op> = fc
  .record({
    kind: fc.constantFrom<'write' | 'zero'>('write', 'write', 'zero'),
    offset: fc.oneof(fc.integer({ min: 0, max: SIZE - 1 }), fc.constantFrom(0, MiB, MiB - 1, 2 * MiB + 512, SIZE - 1)),
    length: fc.oneof(fc.integer({ min: 1, max: 4 * KiB }), fc.integer({ min: 1, max: 2 * MiB })),
    seed: fc.integer({ min: 1, max: 1_000_000 }),
  })
  .map((op) => ({ ...op, length: Math.min(op.length, SIZE - op.offset) }));

async function apply(writer: DiskWriter, model: Uint8Array, ops: Op[]): Promise<void> {
  for (const op of ops) {
    if (op.kind === 'write') {
      const data = pattern(op.length, op.seed);
      await writer.write(op.offset, data);
      model.set(data, op.offset);
    } else {
      await writer.writeZeroes(op.offset, op.length);
      model.fill(0, op.offset, op.offset + op.length);
    }
  }
}

async function expectContent(path: string, model: Uint8Array, qemuFormat?: string): Promise<void> {
  const reader = await openDisk(path);
  try {
    expect(reader.size).toBe(model.length);
    expect(Buffer.compare(await reader.read(0, reader.size), model)).toBe(0);
  } finally {
    await reader.close();
  }
  if (qemuFormat) {
    const raw = join(dir, `model-${n}.raw`);
    const { writeFile } = await import('node:fs/promises');
    await writeFile(raw, model);
    await qemuOk('qemu-img', ['compare', '-q', '-f', 'raw', '-F', qemuFormat, raw, path]);
  }
}

const RUNS = 8;
const prop = (fn: (ops: Op[]) => Promise<void>) =>
  fc.assert(fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 12 }), fn), { numRuns: RUNS });

describe('writers against an in-memory model', () => {
  for (const kind of ['raw', 'vhd-dynamic', 'vhd-fixed', 'vhdx-dynamic', 'vhdx-fixed'] as const) {
    it(kind, async () => {
      await prop(async (ops) => {
        const path = join(dir, `w${++n}.img`);
        const writer =
          kind === 'raw'
            ? await createRaw(path, { size: SIZE, sync: false })
            : kind.startsWith('vhdx')
              ? await createVhdx(path, {
                  size: SIZE,
                  blockSize: MiB,
                  type: kind === 'vhdx-fixed' ? 'fixed' : 'dynamic',
                  sync: false,
                })
              : await createVhd(path, {
                  size: SIZE,
                  blockSize: 512 * KiB,
                  type: kind === 'vhd-fixed' ? 'fixed' : 'dynamic',
                  sync: false,
                });
        const model = new Uint8Array(SIZE);
        await apply(writer, model, ops);
        await writer.close();
        await expectContent(path, model, kind === 'raw' ? 'raw' : kind.startsWith('vhdx') ? 'vhdx' : 'vpc');
      });
    });
  }

  it('differencing VHD and VHDX over a written parent', async () => {
    for (const format of ['vhd', 'vhdx'] as const) {
      const base = join(dir, `base.${format}`);
      const model = new Uint8Array(SIZE);
      const w =
        format === 'vhd'
          ? await createVhd(base, { size: SIZE, blockSize: 512 * KiB })
          : await createVhdx(base, { size: SIZE, blockSize: MiB });
      await apply(w, model, [
        { kind: 'write', offset: 0, length: SIZE, seed: 5 },
        { kind: 'zero', offset: MiB + 3, length: 700 * KiB, seed: 0 },
      ]);
      await w.close();
      await prop(async (ops) => {
        const parent = format === 'vhd' ? await openVhd(base) : await openVhdx(base);
        const path = join(dir, `child${++n}.${format}`);
        const child =
          format === 'vhd'
            ? await createVhd(path, { size: SIZE, parent: parent as never, blockSize: 512 * KiB })
            : await createVhdx(path, { size: SIZE, parent: parent as never, blockSize: MiB });
        const expected = model.slice();
        await apply(child, expected, ops);
        await child.close();
        await parent.close();
        await expectContent(path, expected);
      });
    }
  });
});
