import { createHash } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { type DiskWriter, isReplikitError } from '@replikit/core';
import { checkRange } from '@replikit/core/internal';
import fc from 'fast-check';
import { xxhash64 } from 'hash-wasm';
import { beforeAll, describe, expect, it } from 'vitest';
import { encodeXapi, readXva } from '../src/index.js';
import { tarHeader, tarPadding } from '../src/xva/tar.js';
import { pattern } from './helpers/qemu.js';

/**
 * Fuzzing of the XVA reader alone: small archives in the shapes XenServer writes (V7 headers
 * without a magic, `.xxhash` and `.checksum` files, a keep-alive chunk, skipped chunks, two VDIs),
 * plain and gzip-compressed, mutated in memory (bytes set, bits flipped, the stream cut short,
 * tar header checksums optionally resealed so the mutation reaches the deeper parsers). The only
 * outcome allowed besides success is a one-line FormatError; every write stays inside its VDI.
 * Chunks are 1 KiB (XAPI sizes gaps by the first chunk's length, so that is a valid archive) to
 * keep 10,000 cases within seconds.
 */

const RUNS = { plain: 9000, gzip: 1000 };
let plain: Uint8Array;
let gzipped: Uint8Array;
const headerAt: number[] = [];

/** A V7 header as XAPI writes it: no magic, mode 0, mtime 0, typeflag NUL. */
function v7Header(name: string, size: number): Uint8Array {
  const h = tarHeader(name, size, 0);
  h.fill(0, 100, 148); // mode, uid, gid, size, mtime: rewritten below
  h.fill(0, 156, 512); // typeflag, magic, owner names
  const put = (at: number, width: number, value: number) =>
    h.set(new TextEncoder().encode(`${value.toString(8).padStart(width - 1, '0')}\0`), at);
  put(100, 8, 0);
  put(108, 8, 0);
  put(116, 8, 0);
  put(124, 12, size);
  put(136, 12, 0);
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.set(new TextEncoder().encode(`${sum.toString(8).padStart(6, '0')}\0 `), 148);
  return h;
}

beforeAll(async () => {
  const vdis = [
    { ref: 'Ref:10', size: 4096, chunks: [0, 1, 2, 4] },
    { ref: 'Ref:12', size: 2048 + 512, chunks: [0, 2] },
  ];
  const objects = [
    { class: 'VM', id: 'Ref:0', snapshot: { uuid: 'u', name_label: 'fuzz' } },
    ...vdis.map((v) => ({ class: 'VDI', id: v.ref, snapshot: { uuid: v.ref, virtual_size: String(v.size) } })),
  ];
  const parts: Uint8Array[] = [];
  const add = (name: string, data: Uint8Array, v7: boolean) => {
    headerAt.push(parts.reduce((n, p) => n + p.length, 0));
    parts.push(v7 ? v7Header(name, data.length) : tarHeader(name, data.length, 0), data, tarPadding(data.length));
  };
  const xml = new TextEncoder().encode(encodeXapi({ version: { export_vsn: 2 }, objects }));
  add('ova.xml', xml, true);
  let seed = 1;
  for (const [k, v] of vdis.entries()) {
    for (const n of v.chunks) {
      const last = n === v.chunks.at(-1);
      const data = n === 1 ? new Uint8Array(0) : pattern(last ? 1024 - (k === 1 ? 512 : 0) : 1024, seed++);
      const name = `${v.ref}/${String(n).padStart(8, '0')}`;
      add(name, data, k === 0);
      if (k === 0) add(`${name}.xxhash`, new TextEncoder().encode((await xxhash64(data)).toUpperCase()), true);
      else add(`${name}.checksum`, new TextEncoder().encode(createHash('sha1').update(data).digest('hex')), false);
    }
  }
  parts.push(new Uint8Array(1024));
  plain = new Uint8Array(Buffer.concat(parts));
  gzipped = new Uint8Array(gzipSync(plain));
});

interface Case {
  patches: { offset: number; bytes: number[] }[];
  cut: number | null;
  reseal: boolean;
  piece: number;
}

function caseArb(size: number, hot: number[]): fc.Arbitrary<Case> {
  const offset = fc.oneof(
    fc.integer({ min: 0, max: size - 1 }),
    fc.constantFrom(...hot).chain((h) => fc.integer({ min: h, max: Math.min(size - 1, h + 511) })),
  );
  const patch = fc.record({
    offset,
    bytes: fc.oneof(
      fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 1, maxLength: 8 }),
      fc.constantFrom<number[]>([0], [0xff], [0x30], Array(11).fill(0x37)),
    ),
  });
  return fc.record({
    patches: fc.array(patch, { minLength: 1, maxLength: 4 }),
    cut: fc.option(fc.integer({ min: 0, max: size - 1 }), { freq: 6 }),
    reseal: fc.boolean(),
    piece: fc.constantFrom(61, 512, 4096),
  });
}

function apply(base: Uint8Array, c: Case, hot: number[]): Uint8Array {
  const length = c.cut ?? base.length;
  const bytes = base.slice(0, length);
  for (const p of c.patches) {
    p.bytes.forEach((b, i) => {
      if (p.offset + i < length) bytes[p.offset + i] = b;
    });
  }
  if (c.reseal) {
    for (const at of hot) {
      if (at + 512 > length) continue;
      let sum = 0;
      for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : bytes[at + i]!;
      bytes.set(new TextEncoder().encode(`${sum.toString(8).padStart(6, '0')}\0 `), at + 148);
    }
  }
  return bytes;
}

function read(bytes: Uint8Array, piece: number) {
  async function* stream() {
    for (let at = 0; at < bytes.length; at += piece) yield bytes.subarray(at, at + piece);
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
  return readXva(stream(), { name: 'fuzz.xva', openWriter: async (vdi) => writer(vdi.size) });
}

async function exercise(bytes: Uint8Array, piece: number): Promise<void> {
  try {
    await read(bytes, piece);
  } catch (error) {
    if (!isReplikitError(error, 'E_FORMAT')) throw error;
    expect(error.message).not.toContain('\n');
  }
}

describe('XVA reader fuzzing: typed errors only', () => {
  it('reads the unmutated archives', async () => {
    for (const bytes of [plain, gzipped]) {
      const result = await read(bytes, 4096);
      expect(result.vdis.map((v) => v.size)).toEqual([4096, 2560]);
      expect(result.chunks).toBe(6);
    }
  });

  it(`mutated plain archives (${RUNS.plain} cases)`, async () => {
    await fc.assert(
      fc.asyncProperty(caseArb(plain.length, headerAt), (c) => exercise(apply(plain, c, headerAt), c.piece)),
      { numRuns: RUNS.plain },
    );
  });

  it(`mutated gzip-compressed archives (${RUNS.gzip} cases)`, async () => {
    await fc.assert(
      fc.asyncProperty(caseArb(gzipped.length, [0]), fc.boolean(), (c, inner) => {
        // either the compressed bytes are damaged, or the tar inside is and is then compressed
        const bytes = inner ? new Uint8Array(gzipSync(apply(plain, c, headerAt))) : apply(gzipped, c, []);
        return exercise(bytes, c.piece);
      }),
      { numRuns: RUNS.gzip },
    );
    expect(RUNS.plain + RUNS.gzip).toBeGreaterThanOrEqual(10_000);
  });
});
