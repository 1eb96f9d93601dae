import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compareDisks, convertDisk, createVhdx, openDisk, openVhd, openVhdx } from '../src/index.js';
import { pattern, qemu, qemuOk, qemuRaw, requireQemu, tempDir } from './helpers/qemu.js';

const MiB = 1024 * 1024;
let dir: string;
let cleanup: () => Promise<void>;

beforeAll(async () => {
  await requireQemu();
  ({ dir, cleanup } = await tempDir());
});
afterAll(async () => cleanup?.());

/** qemu-io commands writing recognisable patterns at the start, across blocks and at the end. */
function patternWrites(size: number): string[] {
  const last = Math.floor((size - 4096) / 4096) * 4096;
  return [
    '-c',
    'write -P 0xab 0 64k',
    '-c',
    `write -P 0x11 ${MiB - 4096} ${MiB + 8192}`,
    '-c',
    `write -P 0x5a ${last} 4k`,
    '-c',
    `write -z ${MiB} 4096`,
  ];
}

async function readAll(path: string): Promise<Uint8Array> {
  const reader = await openDisk(path);
  try {
    return await reader.read(0, reader.size);
  } finally {
    await reader.close();
  }
}

describe('images made by qemu-img, read by replikit', () => {
  const cases: { name: string; fmt: 'vpc' | 'vhdx'; opts: string; size: number }[] = [
    { name: 'VHD dynamic, CHS-rounded size', fmt: 'vpc', opts: 'subformat=dynamic', size: 5 * MiB + 12345 },
    { name: 'VHD dynamic, force_size', fmt: 'vpc', opts: 'subformat=dynamic,force_size=on', size: 7 * MiB + 512 },
    { name: 'VHD fixed', fmt: 'vpc', opts: 'subformat=fixed,force_size=on', size: 3 * MiB },
    { name: 'VHDX dynamic 1 MiB blocks', fmt: 'vhdx', opts: 'subformat=dynamic,block_size=1M', size: 5 * MiB + 4096 },
    {
      name: 'VHDX dynamic 8 MiB blocks, not a block multiple',
      fmt: 'vhdx',
      opts: 'subformat=dynamic,block_size=8M',
      size: 11 * MiB + 512,
    },
    {
      name: 'VHDX dynamic 256 MiB blocks, no zero state',
      fmt: 'vhdx',
      opts: 'subformat=dynamic,block_size=256M,block_state_zero=off',
      size: 3 * MiB,
    },
    { name: 'VHDX fixed', fmt: 'vhdx', opts: 'subformat=fixed,block_size=2M', size: 5 * MiB },
  ];
  for (const c of cases) {
    it(c.name, async () => {
      const path = join(dir, `q-${c.name.replace(/\W+/g, '-')}.${c.fmt === 'vpc' ? 'vhd' : 'vhdx'}`);
      await qemuOk('qemu-img', ['create', '-q', '-f', c.fmt, '-o', c.opts, path, String(c.size)]);
      await qemuOk('qemu-io', ['-f', c.fmt, ...patternWrites(c.size - 8192), path]);
      const expected = await qemuRaw(dir, path, c.fmt);
      const reader = await openDisk(path);
      try {
        expect(reader.info.format).toBe(c.fmt === 'vpc' ? 'vhd' : 'vhdx');
        expect(reader.size).toBe(expected.length);
        expect(Buffer.compare(await reader.read(0, reader.size), expected)).toBe(0);
        // every non-zero byte lies inside an allocated extent
        const covered = new Uint8Array(reader.size);
        for await (const e of reader.allocated()) covered.fill(1, e.offset, e.offset + e.length);
        for (let i = 0; i < expected.length; i += 512) if (expected[i] !== 0) expect(covered[i]).toBe(1);
      } finally {
        await reader.close();
      }
    });
  }
});

describe('images written by replikit, checked by qemu-img', () => {
  const source = async (size: number) => {
    const path = join(dir, `src-${size}.raw`);
    const bytes = new Uint8Array(size);
    bytes.set(pattern(70_000, size), 0);
    bytes.set(pattern(3 * MiB, 7), Math.min(size - 3 * MiB, 2 * MiB - 1000));
    bytes.set(pattern(5000, 9), size - 5000);
    await writeFile(path, bytes);
    return path;
  };
  const cases: {
    to: 'vhd' | 'vhdx';
    sub: 'fixed' | 'dynamic';
    size: number;
    blockSize?: number;
    sector?: 512 | 4096;
  }[] = [
    { to: 'vhd', sub: 'dynamic', size: 9 * MiB + 512 },
    { to: 'vhd', sub: 'fixed', size: 6 * MiB },
    { to: 'vhd', sub: 'dynamic', size: 8 * MiB, blockSize: 512 * 1024 },
    { to: 'vhdx', sub: 'dynamic', size: 9 * MiB + 512, blockSize: MiB },
    { to: 'vhdx', sub: 'dynamic', size: 12 * MiB, blockSize: 8 * MiB, sector: 4096 },
    { to: 'vhdx', sub: 'fixed', size: 6 * MiB + 4096, blockSize: 2 * MiB, sector: 4096 },
    { to: 'vhdx', sub: 'dynamic', size: 5 * MiB, blockSize: 256 * MiB },
    { to: 'vhdx', sub: 'fixed', size: 7 * MiB + 512, blockSize: 4 * MiB },
  ];
  for (const c of cases) {
    const name = `${c.to} ${c.sub} ${c.size} bytes, block ${c.blockSize ?? 'default'}, sector ${c.sector ?? 512}`;
    it(name, async () => {
      const src = await source(c.size);
      const out = join(dir, `out-${name.replace(/\W+/g, '-')}.${c.to}`);
      await convertDisk(src, out, {
        to: c.to,
        subformat: c.sub,
        ...(c.blockSize ? { blockSize: c.blockSize } : {}),
        ...(c.sector ? { logicalSectorSize: c.sector } : {}),
      });
      const fmt = c.to === 'vhd' ? 'vpc' : 'vhdx';
      if (c.sector === 4096) {
        // qemu-img supports only 512-byte logical sectors in VHDX: it must refuse, not misread
        const refused = await qemu('qemu-img', ['info', '-f', fmt, out]);
        expect(refused.out).toMatch(/not supported/i);
      } else {
        if (c.to === 'vhdx') await qemuOk('qemu-img', ['check', '-f', fmt, out]);
        else await qemuOk('qemu-img', ['info', '-f', fmt, out]); // qemu's vpc driver has no check
        await qemuOk('qemu-img', ['compare', '-q', '-f', 'raw', '-F', fmt, src, out]);
      }
      // and replikit reads back what it wrote
      const a = await openDisk(src);
      const b = await openDisk(out);
      try {
        expect(await compareDisks(a, b)).toEqual({ equal: true });
      } finally {
        await a.close();
        await b.close();
      }
      if (c.sub === 'dynamic') expect((await stat(out)).blocks * 512).toBeLessThan(c.size + 8 * MiB);
    });
  }

  it('a VHD converts to VHDX and back, equal all the way (qemu-img compare)', async () => {
    const src = await source(10 * MiB);
    const vhd = join(dir, 'chain.vhd');
    const vhdx = join(dir, 'chain.vhdx');
    const back = join(dir, 'chain-back.raw');
    await convertDisk(src, vhd, { to: 'vhd' });
    await convertDisk(vhd, vhdx, { to: 'vhdx', blockSize: 2 * MiB });
    await convertDisk(vhdx, back, { to: 'raw' });
    await qemuOk('qemu-img', ['compare', '-q', '-f', 'vpc', '-F', 'vhdx', vhd, vhdx]);
    expect(Buffer.compare(await readFile(back), await readFile(src))).toBe(0);
  });
});

describe('differencing chains written by replikit', () => {
  it('VHDX: base + child + grandchild read back through replikit; qemu-img refuses parents it does not support', async () => {
    const size = 6 * MiB + 4096;
    const base = await createVhdx(join(dir, 'base.vhdx'), { size, blockSize: MiB });
    const expected = new Uint8Array(size);
    const put = async (w: { write(o: number, d: Uint8Array): Promise<void> }, offset: number, data: Uint8Array) => {
      await w.write(offset, data);
      expected.set(data, offset);
    };
    await put(base, 0, pattern(3 * MiB, 1));
    await base.close();
    const baseReader = await openVhdx(join(dir, 'base.vhdx'));
    const child = await createVhdx(join(dir, 'child.vhdx'), { size, parent: baseReader });
    await put(child, 4096 + 7, pattern(1000, 2)); // unaligned: sector edges come from the parent
    await put(child, 2 * MiB - 512, pattern(MiB, 3));
    await child.writeZeroes(MiB, MiB); // a whole block: hides the parent's
    expected.fill(0, MiB, 2 * MiB);
    await put(child, size - 100, pattern(100, 4));
    await child.close();
    await baseReader.close();
    const childReader = await openVhdx(join(dir, 'child.vhdx'));
    const grand = await createVhdx(join(dir, 'grand.vhdx'), { size, parent: childReader, blockSize: 4 * MiB });
    await put(grand, 5 * MiB, pattern(4096 * 3, 5));
    await grand.close();
    await childReader.close();

    const reader = await openDisk(join(dir, 'grand.vhdx'));
    try {
      expect(reader.info.subformat).toBe('differencing');
      expect(Buffer.compare(await reader.read(0, size), expected)).toBe(0);
    } finally {
      await reader.close();
    }
    // qemu-img 7.2 has no differencing VHDX support; it must refuse rather than misread
    const info = await qemu('qemu-img', ['info', '-f', 'vhdx', join(dir, 'grand.vhdx')]);
    expect(info.code).not.toBe(0);
    expect(info.out).toMatch(/not supported|Operation not supported/i);
  });

  it('VHD: base + child + grandchild read back through replikit, parent ids checked', async () => {
    const { createVhd } = await import('../src/index.js');
    const size = 5 * MiB;
    const expected = new Uint8Array(size);
    const base = await createVhd(join(dir, 'base.vhd'), { size });
    await base.write(0, pattern(3 * MiB, 11));
    expected.set(pattern(3 * MiB, 11), 0);
    await base.close();
    const baseReader = await openVhd(join(dir, 'base.vhd'));
    const child = await createVhd(join(dir, 'child.vhd'), { size, parent: baseReader });
    await child.write(1000, pattern(777, 12));
    expected.set(pattern(777, 12), 1000);
    await child.write(4 * MiB, pattern(5000, 13));
    expected.set(pattern(5000, 13), 4 * MiB);
    await child.close();
    await baseReader.close();
    const childReader = await openVhd(join(dir, 'child.vhd'));
    const grand = await createVhd(join(dir, 'grand.vhd'), { size, parent: childReader });
    await grand.writeZeroes(2 * MiB, 4096);
    expected.fill(0, 2 * MiB, 2 * MiB + 4096);
    await grand.close();
    await childReader.close();
    expect(Buffer.compare(await readAll(join(dir, 'grand.vhd')), expected)).toBe(0);
    // qemu sees the top file alone as a dynamic disk; replikit refuses a parent with another id
    const other = await (await import('../src/index.js')).createVhd(join(dir, 'other.vhd'), { size });
    await other.close();
    await writeFile(join(dir, 'child.vhd'), await readFile(join(dir, 'other.vhd')));
    await expect(openDisk(join(dir, 'grand.vhd'))).rejects.toMatchObject({
      code: 'E_FORMAT',
      message: expect.stringContaining('is not the image this differencing VHD was made from'),
    });
  });
});
