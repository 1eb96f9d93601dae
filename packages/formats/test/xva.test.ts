import { execFile } from 'node:child_process';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRaw, decodeXapi, openDisk, readXva, type XapiValue, xvaStream } from '../src/index.js';
import { OVA_REQUIRED_FIELDS } from '../src/xva/ova-datamodel.js';
import { pattern, tempDir } from './helpers/qemu.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;
let dir: string;
let cleanup: () => Promise<void>;
let xva: string;
const sizes = [5 * MiB, 4 * MiB + 4096];
const contents: Uint8Array[] = [];

beforeAll(async () => {
  ({ dir, cleanup } = await tempDir());
  for (const [i, size] of sizes.entries()) {
    const bytes = new Uint8Array(size);
    bytes.set(pattern(100_000, i + 1), 1000);
    bytes.set(pattern(MiB, i + 10), 3 * MiB - 512); // crosses a chunk boundary; chunk 1 (and 2 of disk 0) stay zero
    bytes.set(pattern(300, i + 20), size - 300);
    contents.push(bytes);
    await writeFile(join(dir, `disk${i}.raw`), bytes);
  }
  const readers = await Promise.all(sizes.map((_, i) => openDisk(join(dir, `disk${i}.raw`))));
  xva = join(dir, 'vm.xva');
  await pipeline(
    Readable.from(xvaStream({ vm: { name: 'web <&> "one"', cpus: 2 }, disks: readers.map((reader) => ({ reader })) })),
    createWriteStream(xva),
  );
  await Promise.all(readers.map((r) => r.close()));
});
afterAll(async () => cleanup?.());

async function readBack(path: string) {
  const out: string[] = [];
  const result = await readXva(createReadStream(path, { highWaterMark: MiB }), {
    name: path,
    openWriter: async (vdi) => {
      const file = join(dir, `back-${vdi.ref.replace(':', '')}.raw`);
      out.push(file);
      return createRaw(file, { size: vdi.size });
    },
  });
  return { result, out };
}

describe('XVA', () => {
  it('round-trips byte-identical disks, omitting zero chunks', async () => {
    const { result, out } = await readBack(xva);
    expect(result.vm.name_label).toBe('web <&> "one"');
    expect(result.vm.VCPUs_max).toBe('2');
    expect(result.vdis.map((v) => v.size)).toEqual(sizes);
    for (const [i, file] of out.entries()) expect(Buffer.compare(await readFile(file), contents[i]!)).toBe(0);
    // each disk: chunks 0, 2, 3 and 4 (the last, a partial one in disk 1); chunk 1 is zero and omitted
    expect(result.chunks).toBe(8);
  });

  it('is a valid POSIX tar for GNU tar, with ova.xml first and a checksum after each chunk', async () => {
    const { stdout } = await run('tar', ['--format=posix', '-tvf', xva]);
    const names = stdout
      .trim()
      .split('\n')
      .map((line) => line.split(/\s+/).pop());
    expect(names[0]).toBe('ova.xml');
    expect(names).toContain('Ref:10/00000000');
    expect(names).toContain('Ref:10/00000000.checksum');
    expect(names).not.toContain('Ref:10/00000001');
    const extract = join(dir, 'extracted');
    await mkdir(extract);
    await run('tar', ['-xf', xva, '-C', extract]);
    const chunk = await readFile(join(extract, 'Ref:12', '00000004'));
    expect(Buffer.compare(chunk, contents[1]!.subarray(4 * MiB))).toBe(0);
    const { stdout: sum } = await run('sha1sum', [join(extract, 'Ref:12', '00000004')]);
    expect((await readFile(join(extract, 'Ref:12', '00000004.checksum'), 'utf8')).trim()).toBe(sum.split(' ')[0]);
  });

  it('reports a flipped bit with the chunk name', async () => {
    const bytes = new Uint8Array(await readFile(xva));
    // find chunk Ref:10/00000002's data: the block after its tar header
    const header = Buffer.from(bytes).indexOf('Ref:10/00000002\0');
    expect(header).toBeGreaterThan(0);
    bytes[header + 512 + 12345]! ^= 0x10;
    const bad = join(dir, 'flipped.xva');
    await writeFile(bad, bytes);
    await expect(readBack(bad)).rejects.toMatchObject({
      code: 'E_FORMAT',
      message: expect.stringMatching(/chunk Ref:10\/00000002 is damaged/),
    });
  });

  it('always writes chunk 0 and the last chunk, even of an all-zero disk of 3 MiB + 512 B', async () => {
    // XAPI's importer assumes chunk 0 is there and sizes gaps by its length
    // (xapi-project/xen-api ocaml/xapi/stream_vdi.ml recv_all_vdi)
    const zero = join(dir, 'zero.raw');
    await writeFile(zero, new Uint8Array(3 * MiB + 512));
    const reader = await openDisk(zero);
    const path = join(dir, 'zero.xva');
    await pipeline(Readable.from(xvaStream({ vm: { name: 'z' }, disks: [{ reader }] })), createWriteStream(path));
    await reader.close();
    const { stdout } = await run('tar', ['-tf', path]);
    expect(stdout.trim().split('\n')).toEqual([
      'ova.xml',
      'Ref:10/00000000',
      'Ref:10/00000000.checksum',
      'Ref:10/00000003',
      'Ref:10/00000003.checksum',
    ]);
    const { result, out } = await readBack(path);
    expect(result.chunks).toBe(2);
    const back = await readFile(out[0]!);
    expect(back.length).toBe(3 * MiB + 512);
    expect(back.every((x) => x === 0)).toBe(true);
  });

  it('writes an ova.xml whose records have every field the datamodel gives no default', async () => {
    const extract = join(dir, 'ova-check');
    await mkdir(extract);
    await run('tar', ['-xf', xva, '-C', extract, 'ova.xml']);
    const doc = decodeXapi(await readFile(join(extract, 'ova.xml'), 'utf8'), 'ova.xml') as Record<string, XapiValue>;
    const objects = doc.objects as { class: string; id: string; snapshot: Record<string, XapiValue> }[];
    const byClass = (c: string) => objects.filter((o) => o.class === c);
    expect(byClass('VM')).toHaveLength(1);
    expect(byClass('VDI')).toHaveLength(2);
    expect(byClass('VBD')).toHaveLength(2);
    expect(byClass('SR')).toHaveLength(1);
    // the fields XAPI's import was seen to miss, named literally, plus the whole table (which cites
    // ocaml/idl/datamodel.ml and datamodel_vm.ml)
    const named = {
      SR: ['physical_size', 'type'],
      VDI: ['managed', 'missing'],
      VBD: ['storage_lock'],
      VM: ['resident_on', 'domid'],
    };
    for (const [cls, fields] of Object.entries(named)) {
      for (const o of byClass(cls)) for (const f of fields) expect(o.snapshot, `${cls}.${f}`).toHaveProperty(f);
    }
    for (const [cls, fields] of Object.entries(OVA_REQUIRED_FIELDS)) {
      for (const o of byClass(cls)) {
        const missing = fields.filter((f) => !(f in o.snapshot));
        expect(missing, `${cls} ${o.id} lacks`).toEqual([]);
      }
    }
    // cross-references inside the archive agree
    const vm = byClass('VM')[0]!;
    expect(vm.snapshot.VCPUs_max).toBe('2');
    for (const vbd of byClass('VBD')) {
      expect(vbd.snapshot.VM).toBe(vm.id);
      expect(vm.snapshot.VBDs).toContain(vbd.id);
      const vdi = objects.find((o) => o.id === vbd.snapshot.VDI)!;
      expect(vdi.snapshot.VBDs).toEqual([vbd.id]);
      expect(byClass('SR')[0]!.snapshot.VDIs).toContain(vdi.id);
    }
  });

  it('writes every chunk after a first disk smaller than 1 MiB, so XAPI, which sizes gaps by the first chunk, places them right', async () => {
    const small = join(dir, 'small.raw');
    const big = join(dir, 'big.raw');
    const smallBytes = pattern(300 * 1024, 41);
    const bigBytes = new Uint8Array(3 * MiB);
    bigBytes.set(pattern(1000, 42), 0);
    bigBytes.set(pattern(1000, 43), 2 * MiB); // chunk 1 is zero
    await writeFile(small, smallBytes);
    await writeFile(big, bigBytes);
    const readers = [await openDisk(small), await openDisk(big)];
    const path = join(dir, 'small-first.xva');
    await pipeline(
      Readable.from(xvaStream({ vm: { name: 's' }, disks: readers.map((reader) => ({ reader })) })),
      createWriteStream(path),
    );
    for (const r of readers) await r.close();
    const { stdout } = await run('tar', ['-tf', path]);
    expect(stdout).toContain('Ref:12/00000001\n');
    const { out } = await readBack(path);
    expect(Buffer.compare(await readFile(out[0]!), smallBytes)).toBe(0);
    expect(Buffer.compare(await readFile(out[1]!), bigBytes)).toBe(0);
  });

  it('writes the disks in the order XAPI fills them (references sorted as strings: Ref:100 before Ref:12)', async () => {
    const disks = Array.from({ length: 46 }, (_, i) => pattern(512, 100 + i));
    const readers = disks.map((bytes) => ({
      size: bytes.length,
      async *allocated() {
        yield { offset: 0, length: bytes.length };
      },
      async read(offset: number, length: number) {
        return bytes.slice(offset, offset + length);
      },
    }));
    const parts: Uint8Array[] = [];
    for await (const p of xvaStream({
      vm: { name: 'many' },
      disks: readers.map((r) => ({ reader: r as unknown as Parameters<typeof xvaStream>[0]['disks'][0]['reader'] })),
    })) {
      parts.push(p);
    }
    const got = new Map<string, Uint8Array>();
    async function* one() {
      yield new Uint8Array(Buffer.concat(parts));
    }
    const result = await readXva(one(), {
      openWriter: async (vdi) => ({
        size: vdi.size,
        async write(offset: number, data: Uint8Array) {
          got.set(vdi.ref, data.slice());
          expect(offset).toBe(0);
        },
        async writeZeroes() {},
        async flush() {},
        async close() {},
      }),
    });
    expect(result.vdis).toHaveLength(46);
    for (const [i, v] of result.vdis.entries()) expect(Buffer.compare(got.get(v.ref)!, disks[i]!)).toBe(0);
  });

  it('is not opened as a raw disk: openDisk says how to take a disk out of it', async () => {
    await expect(openDisk(xva)).rejects.toMatchObject({
      code: 'E_FORMAT',
      message: expect.stringMatching(/is a XenServer VM export \(XVA\).*replikit disk convert .*vm\.xva <out\.raw>/),
    });
  });

  it('refuses a truncated archive', async () => {
    const bytes = await readFile(xva);
    const cut = join(dir, 'cut.xva');
    await writeFile(cut, bytes.subarray(0, bytes.length - 2048));
    await expect(readBack(cut)).rejects.toMatchObject({ code: 'E_FORMAT' });
  });
});
