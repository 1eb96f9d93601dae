import { createWriteStream } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { openDisk, xvaStream } from '@replikit/formats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from './helpers/cli-harness.js';

const MiB = 1024 * 1024;
let dir: string;
const a = new Uint8Array(5 * MiB + 512);
const b = new Uint8Array(2 * MiB);

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'replikit-disk-xva-'));
  for (let i = 0; i < 300_000; i++) a[i] = (i * 7) & 255;
  a.fill(0x33, 3 * MiB, 3 * MiB + 5000);
  a.fill(0x44, a.length - 100);
  b.fill(0x77, MiB - 10, MiB + 10);
  await writeFile(join(dir, 'a.raw'), a);
  await writeFile(join(dir, 'b.raw'), b);
  // a two-disk VM, as replikit's library writes it
  const readers = [await openDisk(join(dir, 'a.raw')), await openDisk(join(dir, 'b.raw'))];
  await pipeline(
    Readable.from(
      xvaStream({
        vm: { name: 'two-disks', cpus: 4, memoryBytes: 2 * 1024 * MiB },
        disks: readers.map((reader, i) => ({ reader, name: `disk-${i}` })),
      }),
    ),
    createWriteStream(join(dir, 'two.xva')),
  );
  for (const r of readers) await r.close();
});
afterAll(async () => rm(dir, { recursive: true, force: true }));

describe('replikit disk with XVA', () => {
  it('convert in.raw out.xva --to xva, then out.xva back to raw: the bytes round trip', async () => {
    const to = await runCli(['disk', 'convert', 'a.raw', 'a.xva', '--to', 'xva'], { cwd: dir });
    expect(to).toMatchObject({ code: 0, stderr: '' });
    expect(to.stdout).toMatch(/converted a\.raw to a\.xva \(xva\)/);
    const back = await runCli(['disk', 'convert', 'a.xva', 'back.raw'], { cwd: dir });
    expect(back).toMatchObject({ code: 0, stderr: '' });
    expect(Buffer.compare(await readFile(join(dir, 'back.raw')), a)).toBe(0);
    expect(await runCli(['disk', 'compare', 'a.raw', 'back.raw'], { cwd: dir })).toMatchObject({ code: 0 });
  });

  it('info lists the VM, its disks and their sizes (text and JSON)', async () => {
    const text = await runCli(['disk', 'info', 'two.xva'], { cwd: dir });
    expect(text).toMatchObject({ code: 0, stderr: '' });
    expect(text.stdout).toMatch(/format: +xva/);
    expect(text.stdout).toMatch(/VM: +two-disks/);
    expect(text.stdout).toMatch(/CPUs: +4/);
    expect(text.stdout).toMatch(/0: Ref:10 +disk-0 +5\.00 MiB \(5243392 bytes\)/);
    expect(text.stdout).toMatch(/1: Ref:12 +disk-1 +2\.00 MiB \(2097152 bytes\)/);
    const json = JSON.parse((await runCli(['disk', 'info', 'two.xva', '--json'], { cwd: dir })).stdout);
    expect(json).toMatchObject({ format: 'xva', vm: { name: 'two-disks', cpus: 4 } });
    expect(json.disks.map((d: { ref: string; size: number }) => [d.ref, d.size])).toEqual([
      ['Ref:10', a.length],
      ['Ref:12', b.length],
    ]);
  });

  it('convert takes one disk out of a two-disk XVA, by index or by VDI reference, to any format', async () => {
    expect((await runCli(['disk', 'convert', 'two.xva', 'd1.vhdx', '--disk', '1'], { cwd: dir })).code).toBe(0);
    expect(await runCli(['disk', 'compare', 'd1.vhdx', 'b.raw'], { cwd: dir })).toMatchObject({ code: 0 });
    expect((await runCli(['disk', 'convert', 'two.xva', 'd0.raw', '--disk', 'Ref:10'], { cwd: dir })).code).toBe(0);
    expect(Buffer.compare(await readFile(join(dir, 'd0.raw')), a)).toBe(0);
  });

  it('refuses to guess which disk of several, and names an unknown one (exit 2)', async () => {
    const guess = await runCli(['disk', 'convert', 'two.xva', 'x.raw'], { cwd: dir });
    expect(guess.code).toBe(2);
    expect(guess.stderr).toMatch(/two\.xva holds 2 disks .*--disk/);
    const unknown = await runCli(['disk', 'convert', 'two.xva', 'x.raw', '--disk', 'Ref:99'], { cwd: dir });
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/no disk 'Ref:99'.*Ref:10.*Ref:12/);
  });

  it('a damaged XVA fails with the chunk named, and leaves no output', async () => {
    const bytes = new Uint8Array(await readFile(join(dir, 'a.xva')));
    const at = Buffer.from(bytes).indexOf('Ref:10/00000003\0');
    bytes[at + 512 + 10]! ^= 0x01;
    await writeFile(join(dir, 'bad.xva'), bytes);
    const bad = await runCli(['disk', 'convert', 'bad.xva', 'bad.raw'], { cwd: dir });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^replikit: E_FORMAT: .*chunk Ref:10\/00000003 is damaged[^\n]*\n$/);
    await expect(readFile(join(dir, 'bad.raw'))).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
