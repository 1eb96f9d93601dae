import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Extent } from '@replikit/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createVhdx, openVhdx } from '../src/index.js';

const MiB = 2 ** 20;

async function collect(it: AsyncIterable<Extent>): Promise<Extent[]> {
  const out: Extent[] = [];
  for await (const e of it) out.push(e);
  return out;
}

describe('VhdxReader.ownExtents', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'rk-vhdx-own-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('names, to the sector, what a differencing file holds itself, and whole blocks of a dynamic one', async () => {
    const size = 8 * MiB;
    const base = await createVhdx(join(dir, 'base.vhdx'), { size, blockSize: 2 * MiB });
    await base.write(0, new Uint8Array(4 * MiB).fill(1));
    await base.close();
    const parent = await openVhdx(join(dir, 'base.vhdx'));
    const child = await createVhdx(join(dir, 'child.avhdx'), { size, parent, blockSize: 2 * MiB });
    await child.write(512, new Uint8Array(1024).fill(2)); // sectors 1-2 of block 0
    await child.write(3 * MiB - 512, new Uint8Array(1024).fill(3)); // across blocks 1 and 2
    await child.write(6 * MiB, new Uint8Array(2 * MiB).fill(4)); // block 3 whole
    await child.close();
    await parent.close();
    const reader = await openVhdx(join(dir, 'child.avhdx'));
    try {
      expect(await collect(reader.ownExtents())).toEqual([
        { offset: 512, length: 1024 },
        { offset: 3 * MiB - 512, length: 1024 },
        { offset: 6 * MiB, length: 2 * MiB },
      ]);
    } finally {
      await reader.close();
    }
    const dynamic = await openVhdx(join(dir, 'base.vhdx'));
    try {
      expect(await collect(dynamic.ownExtents())).toEqual([{ offset: 0, length: 4 * MiB }]);
    } finally {
      await dynamic.close();
    }
  });
});
