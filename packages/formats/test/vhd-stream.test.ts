import { createWriteStream } from 'node:fs';
import { stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDisk, openVhd, vhdParentRef, vhdStream, vhdStreamLength } from '../src/index.js';
import { pattern, qemuOk, requireQemu, tempDir } from './helpers/qemu.js';

const MiB = 1024 * 1024;
let dir: string;
let cleanup: () => Promise<void>;
beforeAll(async () => {
  await requireQemu();
  ({ dir, cleanup } = await tempDir());
});
afterAll(async () => cleanup?.());

describe('VHD stream with the BAT known up front', () => {
  it('streams a dynamic VHD of chosen blocks that qemu-img reads as the source', async () => {
    const size = 9 * MiB + 1024;
    const source = new Uint8Array(size);
    const blocks = [0, 2, 4];
    for (const b of blocks) source.set(pattern(Math.min(2 * MiB, size - b * 2 * MiB), b + 1), b * 2 * MiB);
    await writeFile(join(dir, 'src.raw'), source);
    const options = {
      size,
      blocks,
      readBlock: async (b: number) => source.slice(b * 2 * MiB, Math.min(size, (b + 1) * 2 * MiB)),
    };
    const out = join(dir, 'stream.vhd');
    await pipeline(Readable.from(vhdStream(options)), createWriteStream(out));
    expect((await stat(out)).size).toBe(vhdStreamLength(options));
    await qemuOk('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'vpc', join(dir, 'src.raw'), out]);
    const reader = await openDisk(out);
    expect(Buffer.compare(await reader.read(0, size), source)).toBe(0);
    await reader.close();
  });

  it('streams a differencing VHD (a delta of known blocks) that reads through its parent', async () => {
    const size = 6 * MiB;
    const base = new Uint8Array(size).fill(7);
    await writeFile(join(dir, 'base.raw'), base);
    const { convertDisk } = await import('../src/index.js');
    await convertDisk(join(dir, 'base.raw'), join(dir, 'base.vhd'), { to: 'vhd' });
    const parent = await openVhd(join(dir, 'base.vhd'));
    const delta = pattern(2 * MiB, 99);
    const out = join(dir, 'delta.vhd');
    await pipeline(
      Readable.from(
        vhdStream({ size, blocks: [1], readBlock: async () => delta, parent: vhdParentRef(parent), path: out }),
      ),
      createWriteStream(out),
    );
    await parent.close();
    const expected = base.slice();
    expected.set(delta, 2 * MiB);
    const reader = await openDisk(out);
    expect(reader.info.subformat).toBe('differencing');
    expect(Buffer.compare(await reader.read(0, size), expected)).toBe(0);
    await reader.close();
  });
});
