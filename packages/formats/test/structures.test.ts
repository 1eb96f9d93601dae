import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatGuid, parseGuid, randomGuid } from '../src/guid.js';
import { crc32c, createVhd, createVhdx, memorySource, openDisk, openSource, vhdGeometry } from '../src/index.js';
import { VHDX_GUID } from '../src/vhdx/vhdx-structs.js';
import { pattern, tempDir } from './helpers/qemu.js';

const MiB = 1024 * 1024;
let dir: string;
let cleanup: () => Promise<void>;
beforeAll(async () => {
  ({ dir, cleanup } = await tempDir());
});
afterAll(async () => cleanup?.());

describe('building blocks', () => {
  it('CRC-32C matches the standard check value and continues across pieces', () => {
    const text = new TextEncoder().encode('123456789');
    expect(crc32c(text)).toBe(0xe3069283);
    expect(crc32c(text.subarray(4), crc32c(text.subarray(0, 4)))).toBe(0xe3069283);
    expect(crc32c(new Uint8Array(0))).toBe(0);
  });

  it('GUIDs use the Microsoft mixed-endian layout', () => {
    expect(Array.from(VHDX_GUID.bat, (b) => b.toString(16).padStart(2, '0')).join(' ')).toBe(
      '66 77 c2 2d 23 f6 00 42 9d 64 11 5e 9b fd 4a 08',
    );
    const g = randomGuid();
    expect(parseGuid(`{${formatGuid(g)}}`)).toEqual(g);
    expect(parseGuid('not-a-guid')).toBeUndefined();
  });

  it('CHS geometry follows the VHD specification', () => {
    expect(vhdGeometry(5 * MiB)).toEqual({ cylinders: 150, heads: 4, sectorsPerTrack: 17 });
    expect(vhdGeometry(3 * 1024 ** 4)).toEqual({ cylinders: 65535, heads: 16, sectorsPerTrack: 255 });
  });
});

describe('bad files give clear FormatErrors', () => {
  it('a truncated dynamic VHD names the BAT entry that points past the end', async () => {
    const path = join(dir, 't.vhd');
    const w = await createVhd(path, { size: 8 * MiB });
    await w.write(6 * MiB, pattern(MiB, 1));
    await w.close();
    const bytes = await readFile(path);
    const cut = bytes.subarray(0, bytes.length - MiB);
    await expect(openSource(memorySource(new Uint8Array(cut), 'cut.vhd'))).rejects.toMatchObject({
      code: 'E_FORMAT',
      message: expect.stringMatching(/cut\.vhd: (VHD BAT entry 3 .* past the end of the file|.*footer)/),
    });
  });

  it('a VHDX whose log holds a valid entry is refused with advice, never read silently', async () => {
    const path = join(dir, 'log.vhdx');
    const w = await createVhdx(path, { size: 4 * MiB, blockSize: MiB });
    await w.write(0, pattern(4096, 2));
    await w.close();
    const bytes = new Uint8Array(await readFile(path));
    const view = new DataView(bytes.buffer);
    const logGuid = randomGuid();
    // a log entry: 'loge', CRC, length 4 KiB, tail 0, sequence 1, no descriptors, the log GUID
    const entry = bytes.subarray(MiB, MiB + 4096);
    entry.set(new TextEncoder().encode('loge'), 0);
    view.setUint32(MiB + 8, 4096, true);
    view.setBigUint64(MiB + 16, 1n, true);
    entry.set(logGuid, 32);
    view.setUint32(MiB + 4, crc32c(entry), true);
    const withGuid = (data: Uint8Array) => {
      for (const at of [64 * 1024, 128 * 1024]) {
        data.set(logGuid, at + 48);
        new DataView(data.buffer).setUint32(at + 4, 0, true);
        new DataView(data.buffer).setUint32(at + 4, crc32c(data.subarray(at, at + 4096)), true);
      }
      return data;
    };
    await writeFile(join(dir, 'log-active.vhdx'), withGuid(bytes));
    const refused = await openDisk(join(dir, 'log-active.vhdx')).catch((error: Error) => error);
    expect(refused).toMatchObject({ code: 'E_FORMAT' });
    expect((refused as Error).message).toMatch(/log holds unapplied updates .*'qemu-img check -r all'/);
    // the same log GUID with no valid entry (the entry's CRC broken): nothing to replay, it opens
    const stale = new Uint8Array(bytes);
    stale[MiB + 100]! ^= 1;
    await writeFile(join(dir, 'log-stale.vhdx'), stale);
    const reader = await openDisk(join(dir, 'log-stale.vhdx'));
    expect(Buffer.compare(await reader.read(0, 4096), pattern(4096, 2))).toBe(0);
    await reader.close();
  });

  it('a VHDX with both headers damaged says so for each', async () => {
    const path = join(dir, 'h.vhdx');
    const w = await createVhdx(path, { size: 2 * MiB, blockSize: MiB });
    await w.close();
    const bytes = new Uint8Array(await readFile(path));
    bytes[64 * 1024 + 20]! ^= 1;
    bytes[128 * 1024]! = 0x48;
    const refused = await openSource(memorySource(bytes, 'h.vhdx')).catch((error: Error) => error);
    expect(refused).toMatchObject({ code: 'E_FORMAT' });
    expect((refused as Error).message).toMatch(
      /h\.vhdx: no valid VHDX header: .*VHDX header 1 at byte 65540: CRC-32C mismatch.*header 2 at byte 131072: bad signature: expected 'head', found 'Head'/,
    );
  });
});
