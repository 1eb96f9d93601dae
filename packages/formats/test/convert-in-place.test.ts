import { link, readdir, readFile, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convertDisk, openDisk } from '../src/index.js';
import { pattern, tempDir } from './helpers/qemu.js';

const MiB = 1024 * 1024;
let dir: string;
let cleanup: () => Promise<void>;
let original: Uint8Array;

beforeAll(async () => {
  ({ dir, cleanup } = await tempDir());
  original = pattern(3 * MiB, 7);
});
afterAll(async () => cleanup?.());

async function expectRefused(input: string, output: string, to: 'raw' | 'vhd' | 'vhdx') {
  const before = new Uint8Array(await readFile(input));
  await expect(convertDisk(input, output, { to })).rejects.toMatchObject({
    code: 'E_INPUT',
    message: expect.stringMatching(/same file/),
  });
  expect(Buffer.compare(new Uint8Array(await readFile(input)), before)).toBe(0);
}

describe('convertDisk never destroys its input', () => {
  for (const to of ['raw', 'vhd', 'vhdx'] as const) {
    it(`refuses the same path, a symbolic link and a hard link (input converted to ${to})`, async () => {
      const input = join(dir, `in-${to}.img`);
      await writeFile(input, original);
      // the input is first made into an image of the tested format, so VHD/VHDX inputs are covered too
      const image = join(dir, `in-${to}.${to}`);
      // small VHDX blocks keep the file (read back after each refusal) small
      await convertDisk(input, image, { to, sync: false, ...(to === 'vhdx' ? { blockSize: MiB } : {}) });
      await symlink(image, join(dir, `link-${to}`));
      await link(image, join(dir, `hard-${to}`));
      for (const output of [image, join(dir, `link-${to}`), join(dir, `hard-${to}`), `${dir}/./in-${to}.${to}`]) {
        for (const target of ['raw', 'vhd', 'vhdx'] as const) await expectRefused(image, output, target);
      }
      const reader = await openDisk(image);
      try {
        expect(Buffer.compare(await reader.read(0, original.length), original)).toBe(0);
      } finally {
        await reader.close();
      }
    });
  }

  it('leaves an existing output untouched and no temporary file when the conversion fails', async () => {
    const input = await rawFile('stopped.raw');
    const output = join(dir, 'kept.raw');
    await writeFile(output, 'previous content');
    const controller = new AbortController();
    // stopped after the first chunk: the output must not be half written
    const converting = convertDisk(input, output, {
      to: 'raw',
      concurrency: 1,
      signal: controller.signal,
      onProgress: () => controller.abort(),
    });
    await expect(converting).rejects.toMatchObject({ code: 'E_ABORTED' });
    expect(await readFile(output, 'utf8')).toBe('previous content');
    expect((await readdir(dir)).filter((name) => name.includes('.tmp'))).toEqual([]);
  });

  it('says when the output folder does not exist', async () => {
    const input = await rawFile('lonely.raw');
    await expect(convertDisk(input, join(dir, 'no-such-folder', 'out.raw'), { to: 'raw' })).rejects.toMatchObject({
      code: 'E_NOT_FOUND',
      message: expect.stringMatching(/no-such-folder does not exist$/),
    });
  });

  it('replaces an existing output only once the new image is complete', async () => {
    const input = await rawFile('whole.raw');
    const output = join(dir, 'whole.vhdx');
    await writeFile(output, 'old');
    await convertDisk(input, output, { to: 'vhdx' });
    expect((await stat(output)).size).toBeGreaterThan(original.length);
    const reader = await openDisk(output);
    try {
      expect(Buffer.compare(await reader.read(0, original.length), original)).toBe(0);
    } finally {
      await reader.close();
    }
    expect((await readdir(dir)).filter((name) => name.includes('.tmp'))).toEqual([]);
  });
});

async function rawFile(name: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, original);
  return path;
}
