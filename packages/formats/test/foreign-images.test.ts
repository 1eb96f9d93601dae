import { execFile } from 'node:child_process';
import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkImage, compareDisks, convertDisk, identifyImageBytes, MAGIC_HEAD_BYTES, openDisk } from '../src/index.js';
import { pattern, qemuOk, requireQemu, tempDir } from './helpers/qemu.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;
let dir: string;
let cleanup: () => Promise<void>;

beforeAll(async () => {
  await requireQemu();
  ({ dir, cleanup } = await tempDir());
  await writeFile(join(dir, 'plain.raw'), pattern(2 * MiB, 3));
});
afterAll(async () => cleanup?.());

/** Images replikit does not read, each made by the tool users make it with, and what it must say. */
const foreign: Array<{ name: string; make: (path: string) => Promise<void>; says: RegExp }> = [
  ...(['qcow2', 'qcow', 'qed', 'vdi', 'parallels'] as const).map((fmt) => ({
    name: fmt,
    make: async (path: string) => {
      await qemuOk('qemu-img', ['create', '-q', '-f', fmt, path, '4M']);
      await qemuOk('qemu-io', ['-f', fmt, '-c', 'write -P 0x5a 0 64k', path]);
    },
    says: new RegExp(`${fmt}\\b.*image.*qemu-img convert -f ${fmt} -O raw`, 'i'),
  })),
  ...(['monolithicSparse', 'streamOptimized', 'monolithicFlat'] as const).map((subformat) => ({
    name: `vmdk ${subformat}`,
    make: async (path: string) => {
      await qemuOk('qemu-img', ['create', '-q', '-f', 'vmdk', '-o', `subformat=${subformat}`, path, '4M']);
    },
    says: subformat === 'monolithicFlat' ? /VMDK descriptor.*qemu-img convert -f vmdk -O raw/ : /VMDK.*-f vmdk -O raw/,
  })),
  {
    name: 'luks',
    make: async (path: string) => {
      const secret = ['--object', 'secret,id=s0,data=replikit'];
      const args = ['create', '-q', '-f', 'luks', ...secret, '-o', 'key-secret=s0,iter-time=10', path, '4M'];
      // qemu-img times its key derivation in thread CPU time; on a busy machine that clock can
      // read the same before and after ("Unable to get accurate CPU usage"): that alone is retried.
      for (let attempt = 1; ; attempt++) {
        try {
          await qemuOk('qemu-img', args);
          return;
        } catch (error) {
          if (attempt >= 5 || !/accurate CPU usage/.test(String(error))) throw error;
        }
      }
    },
    says: /LUKS.*encrypted.*qemu-img convert/,
  },
  ...(
    [
      ['gzip', ['-k', '-c']],
      ['xz', ['-k', '-c', '-0']],
      ['zstd', ['-q', '-c']],
      ['bzip2', ['-k', '-c']],
    ] as const
  ).map(([tool, args]) => ({
    name: tool,
    make: async (path: string) => {
      const { stdout } = await run(tool, [...args, join(dir, 'plain.raw')], { encoding: 'buffer', maxBuffer: 8 * MiB });
      await writeFile(path, stdout);
    },
    says: new RegExp(`${tool}-compressed.*decompress`),
  })),
];

describe('images of formats replikit does not read are refused, never read as raw', () => {
  for (const c of foreign) {
    it(c.name, async () => {
      const path = join(dir, `foreign-${c.name.replace(/\W+/g, '-')}.img`);
      await c.make(path);
      await expect(openDisk(path)).rejects.toMatchObject({ code: 'E_FORMAT', message: expect.stringMatching(c.says) });
      await expect(openDisk(path)).rejects.toThrow(/^[^\n]*$/);
      const report = await checkImage(path);
      expect(report.ok).toBe(false);
      expect(report.problems.join('\n')).toMatch(c.says);
      const before = await readdir(dir);
      await expect(convertDisk(path, join(dir, 'out.raw'), { to: 'raw' })).rejects.toMatchObject({ code: 'E_FORMAT' });
      expect(await readdir(dir)).toEqual(before);
    });
  }

  it('an ISO 9660 image is raw data, as qemu-img sees it', async () => {
    const bytes = pattern(MiB, 9);
    bytes.set(new TextEncoder().encode('\x01CD001\x01'), 0x8000);
    const path = join(dir, 'cd.iso');
    await writeFile(path, bytes);
    const reader = await openDisk(path);
    try {
      expect(reader.info.format).toBe('raw');
      const plain = await openDisk(path, { format: 'raw' });
      try {
        expect(await compareDisks(reader, plain)).toEqual({ equal: true });
      } finally {
        await plain.close();
      }
    } finally {
      await reader.close();
    }
  });
});

describe('identifyImageBytes (property)', () => {
  const magics: Array<[string, number[]]> = [
    ['qcow2', [0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 3]],
    ['qcow', [0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 1]],
    ['qed', [0x51, 0x45, 0x44, 0]],
    ['vmdk', [...'KDMV'].map((c) => c.charCodeAt(0))],
    ['luks', [0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe]],
    ['xz', [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0]],
    ['zstd', [0x28, 0xb5, 0x2f, 0xfd]],
    ['vhdx', [...'vhdxfile'].map((c) => c.charCodeAt(0))],
  ];

  it('never throws, and says readable exactly for raw, VHD and VHDX', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 512 }),
        fc.option(fc.uint8Array({ minLength: 512, maxLength: 512 })),
        (head, tail) => {
          const kind = identifyImageBytes(head, tail ?? undefined);
          expect(kind.readable).toBe(['raw', 'vhd', 'vhdx'].includes(kind.format));
          if (!kind.readable) expect(kind.howToConvert).toMatch(/<in>/);
        },
      ),
      { numRuns: 500 },
    );
  });

  it('a signature at byte 0 wins over whatever follows it', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...magics),
        fc.uint8Array({ minLength: 64, maxLength: MAGIC_HEAD_BYTES }),
        ([format, magic], rest) => {
          const head = new Uint8Array(Math.max(rest.length, magic.length));
          head.set(rest);
          head.set(magic, 0);
          expect(identifyImageBytes(head).format).toBe(format);
        },
      ),
      { numRuns: 300 },
    );
  });
});
