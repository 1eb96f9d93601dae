import { mkdtemp, open, readFile, rm, stat, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { copyVdiFile, createVdiFile } from '../src/storage/vdi-file.js';

const MiB = 1024 * 1024;

// A snapshot or clone in the simulator copies the VDI's file. A real SR does it in O(1), so the
// copy must cost what is written, not the virtual size: holes stay holes, the bytes are equal.
describe('copyVdiFile', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'rk-vdi-copy-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('copies a sparse 256 MiB file byte for byte and keeps it sparse', async () => {
    const from = join(dir, 'a.img');
    await createVdiFile(from, 256 * MiB + 4096);
    const fh = await open(from, 'r+');
    for (const [i, off] of [0, 3 * MiB + 17, 200 * MiB, 256 * MiB + 100].entries()) {
      await fh.write(Buffer.alloc(3000, i + 1), 0, 3000, off);
    }
    await fh.close();
    const to = join(dir, 'b.img');
    await copyVdiFile(from, to);
    const [a, b] = await Promise.all([readFile(from), readFile(to)]);
    expect(b.length).toBe(a.length);
    expect(b.equals(a)).toBe(true);
    // 4 small writes: a few pages (or a few MiB with the read loop), never the virtual size.
    expect((await stat(to)).blocks * 512).toBeLessThan(8 * MiB);
  });

  it('never copies over an existing VDI, and refuses a symlink as the source', async () => {
    const from = join(dir, 'a.img');
    await createVdiFile(from, MiB);
    const other = join(dir, 'other.img');
    await createVdiFile(other, 2 * MiB);
    await expect(copyVdiFile(from, other)).rejects.toMatchObject({ code: 'EEXIST' });
    expect((await stat(other)).size).toBe(2 * MiB);
    const link = join(dir, 'link.img');
    await symlink(from, link);
    await expect(copyVdiFile(link, join(dir, 'c.img'))).rejects.toThrow(/not a regular file/);
  });
});
