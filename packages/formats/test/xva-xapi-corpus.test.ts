// XVAs as XenServer writes them, built here with GNU tar from chunk folders, and read back by the
// rules of XAPI's importer (xapi-project/xen-api ocaml/xapi/stream_vdi.ml recv_all_vdi): chunks
// are consumed in order until the VDI is full, a gap between two chunk numbers counts as zeros of
// the first chunk's length, an empty chunk (the exporter's keep-alive) advances the number but not
// the offset; each chunk is followed by `.xxhash` (XXH64, 16 upper-case hex digits) or
// `.checksum` (SHA-1 hex). Compressed archives are gzip or zstd, as ocaml/xapi/import.ml
// with_open_archive accepts them.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { xxhash64 } from 'hash-wasm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRaw, encodeXapi, readXva, type XapiValue } from '../src/index.js';
import { pattern, tempDir } from './helpers/qemu.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;
let dir: string;
let cleanup: () => Promise<void>;

beforeAll(async () => {
  ({ dir, cleanup } = await tempDir());
});
afterAll(async () => cleanup?.());

interface Chunk {
  /** The chunk's number in its file name. */
  n: number;
  data: Uint8Array;
}
interface CorpusVdi {
  ref: string;
  size: number;
  chunks: Chunk[];
}

/** A minimal ova.xml in XAPI's encoding: one VM, one VBD and one VDI per disk. */
function ovaXml(vdis: CorpusVdi[]): string {
  const objects: XapiValue[] = [
    {
      class: 'VM',
      id: 'Ref:0',
      snapshot: { uuid: 'vm-uuid', name_label: 'xs-vm', VBDs: vdis.map((_, i) => `Ref:${100 + i}`) },
    },
    ...vdis.flatMap((v, i): XapiValue[] => [
      {
        class: 'VDI',
        id: v.ref,
        snapshot: { uuid: `vdi-${i}`, name_label: `disk ${i}`, virtual_size: String(v.size), type: 'user' },
      },
      {
        class: 'VBD',
        id: `Ref:${100 + i}`,
        snapshot: { VM: 'Ref:0', VDI: v.ref, type: 'Disk', userdevice: String(i) },
      },
    ]),
  ];
  return encodeXapi({ version: { export_vsn: 2, xapi_major: 1, xapi_minor: 20 }, objects });
}

/**
 * Writes a chunk folder and archives it with GNU tar in the given format (entries in XAPI's
 * order: ova.xml, then each chunk followed by its checksum file). Returns the archive's path.
 */
async function buildXva(
  name: string,
  vdis: CorpusVdi[],
  opts: { format: 'v7' | 'ustar' | 'gnu'; sum: 'xxhash' | 'checksum'; compress?: 'gzip' | 'zstd' },
): Promise<string> {
  const folder = join(dir, `${name}.d`);
  await mkdir(folder, { recursive: true });
  const order = ['ova.xml'];
  await writeFile(join(folder, 'ova.xml'), ovaXml(vdis));
  for (const v of vdis) {
    await mkdir(join(folder, v.ref), { recursive: true });
    for (const c of v.chunks) {
      const file = `${v.ref}/${String(c.n).padStart(8, '0')}`;
      await writeFile(join(folder, file), c.data);
      const sum =
        opts.sum === 'xxhash'
          ? (await xxhash64(c.data)).toUpperCase()
          : createHash('sha1').update(c.data).digest('hex');
      await writeFile(join(folder, `${file}.${opts.sum}`), sum);
      order.push(file, `${file}.${opts.sum}`);
    }
  }
  const out = join(dir, `${name}.xva`);
  // XAPI writes mode 0, mtime 0 and no owner names; GNU tar is told the same
  await run('tar', [
    `--format=${opts.format}`,
    '--mode=0',
    '--mtime=@0',
    '--owner=0',
    '--group=0',
    '--numeric-owner',
    '--no-recursion',
    '-cf',
    out,
    '-C',
    folder,
    ...order,
  ]);
  if (opts.compress === 'gzip') {
    await run('gzip', ['-f', out]);
    return `${out}.gz`;
  }
  if (opts.compress === 'zstd') {
    await run('zstd', ['-q', '-f', '--rm', out]).catch((error: NodeJS.ErrnoException) => {
      throw error.code === 'ENOENT' ? new Error('zstd is missing: install it (apt-get install zstd) and retry') : error;
    });
    return `${out}.zst`;
  }
  return out;
}

/** Reads an archive with replikit; returns each VDI's bytes by ref. */
async function readBack(path: string): Promise<Map<string, Uint8Array>> {
  const files = new Map<string, string>();
  await readXva(createReadStream(path, { highWaterMark: 256 * 1024 }), {
    name: path,
    openWriter: async (vdi) => {
      const file = `${path}-${vdi.ref.replace(':', '')}.raw`;
      files.set(vdi.ref, file);
      return createRaw(file, { size: vdi.size });
    },
  });
  const out = new Map<string, Uint8Array>();
  for (const [ref, file] of files) out.set(ref, new Uint8Array(await readFile(file)));
  return out;
}

/** What XAPI's importer writes for a VDI: chunks in order, gaps sized by the first chunk. */
function xapiBytes(v: CorpusVdi, firstLength: number): Uint8Array {
  const out = new Uint8Array(v.size);
  let offset = 0;
  let last = -1;
  for (const c of v.chunks) {
    offset += (c.n - last - 1) * firstLength;
    out.set(c.data, offset);
    offset += c.data.length;
    last = c.n;
  }
  return out;
}

const a = pattern(MiB, 1);
const b = pattern(MiB, 2);
const d = pattern(MiB, 3);
const tail = pattern(512, 4);

/** A 4 MiB disk exported by XAPI's raw path: chunk 1 is a keep-alive, chunk 3 a skipped zero chunk. */
const keepAlive: CorpusVdi = {
  ref: 'Ref:10',
  size: 4 * MiB,
  chunks: [
    { n: 0, data: a },
    { n: 1, data: new Uint8Array(0) },
    { n: 2, data: b },
    { n: 4, data: d },
  ],
};
/** A second disk of 2 MiB + 512 B whose middle chunk was zero and left out. */
const second: CorpusVdi = {
  ref: 'Ref:12',
  size: 2 * MiB + 512,
  chunks: [
    { n: 0, data: b },
    { n: 2, data: tail },
  ],
};
/** An all-zero disk of 3 MiB + 512 B: XAPI writes only its first and last chunks. */
const zeroDisk: CorpusVdi = {
  ref: 'Ref:20',
  size: 3 * MiB + 512,
  chunks: [
    { n: 0, data: new Uint8Array(MiB) },
    { n: 3, data: new Uint8Array(512) },
  ],
};

describe('XVA as XenServer writes it (GNU tar corpus)', () => {
  const cases = [
    { format: 'v7', sum: 'xxhash' },
    { format: 'v7', sum: 'checksum' },
    { format: 'ustar', sum: 'xxhash' },
    { format: 'gnu', sum: 'checksum' },
    { format: 'v7', sum: 'xxhash', compress: 'gzip' },
    { format: 'gnu', sum: 'xxhash', compress: 'zstd' },
  ] as const;
  for (const c of cases) {
    it(`reads a ${c.format} tar with .${c.sum}${'compress' in c ? `, ${c.compress}-compressed` : ''}, keep-alive chunk included`, async () => {
      const path = await buildXva(
        `ok-${c.format}-${c.sum}-${'compress' in c ? c.compress : 'plain'}`,
        [keepAlive, second],
        c,
      );
      const got = await readBack(path);
      expect(Buffer.compare(got.get('Ref:10')!, xapiBytes(keepAlive, MiB))).toBe(0);
      expect(Buffer.compare(got.get('Ref:12')!, xapiBytes(second, MiB))).toBe(0);
      // the keep-alive chunk moved chunk 4 to 3 MiB, not 4 MiB
      expect(Buffer.compare(got.get('Ref:10')!.subarray(3 * MiB), d)).toBe(0);
    });
  }

  it('reads an all-zero disk of 3 MiB + 512 B (first and last chunks only)', async () => {
    const path = await buildXva('zero', [zeroDisk], { format: 'v7', sum: 'xxhash' });
    const got = await readBack(path);
    expect(got.get('Ref:20')!.length).toBe(3 * MiB + 512);
    expect(got.get('Ref:20')!.every((x) => x === 0)).toBe(true);
  });

  it('refuses a flipped byte, naming the chunk', async () => {
    const path = await buildXva('flipped', [keepAlive], { format: 'v7', sum: 'xxhash' });
    const bytes = new Uint8Array(await readFile(path));
    const header = Buffer.from(bytes).indexOf('Ref:10/00000002\0');
    bytes[header + 512 + 777]! ^= 0x01;
    await writeFile(path, bytes);
    const error = await readBack(path).catch((e: unknown) => e);
    expect(error).toMatchObject({
      code: 'E_FORMAT',
      message: expect.stringMatching(/chunk Ref:10\/00000002 is damaged/),
    });
    expect((error as Error).message).not.toContain('\n');
  });

  it('refuses a missing last chunk, naming the chunk after which data stops', async () => {
    const path = await buildXva('no-last', [{ ...second, chunks: second.chunks.slice(0, 1) }], {
      format: 'ustar',
      sum: 'checksum',
    });
    const error = await readBack(path).catch((e: unknown) => e);
    expect(error).toMatchObject({
      code: 'E_FORMAT',
      message: expect.stringMatching(/Ref:12.*after chunk Ref:12\/00000000.*last chunk is missing/),
    });
    expect((error as Error).message).not.toContain('\n');
  });

  it('refuses a chunk past the end of its VDI, naming it', async () => {
    const path = await buildXva(
      'past-end',
      [
        {
          ...second,
          chunks: [
            { n: 0, data: b },
            { n: 3, data: tail },
          ],
        },
      ],
      { format: 'gnu', sum: 'xxhash' },
    );
    const error = await readBack(path).catch((e: unknown) => e);
    expect(error).toMatchObject({
      code: 'E_FORMAT',
      message: expect.stringMatching(/chunk Ref:12\/00000003 .*past the end/),
    });
    expect((error as Error).message).not.toContain('\n');
  });
});
