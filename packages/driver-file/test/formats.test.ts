// Property and fuzz tests of the driver's three parsers: overlay/undo records, allocation maps and
// vm.json. Whatever the bytes, they either parse or fail with a replikit error; never anything else.
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isReplikitError } from '@replikit/core';
import { testPattern } from '@replikit/core/testing';
import { afterAll, describe, expect, it } from 'vitest';
import { ALLOCATION_GRANULE, AllocationMap, parseVmJson } from '../src/index.js';
import { encodeRecordHeader, RECORD_HEADER_SIZE, walkRecords } from '../src/overlay-log.js';

/** A small seeded generator so that a failure can be replayed. */
function random(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 2 ** 32;
  };
}

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

describe('overlay records', () => {
  it('stop exactly at the first damaged record, whatever the damage', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'rk-records-'));
    dirs.push(dir);
    const diskSize = 1024 * 1024;
    const rnd = random(42);
    for (let round = 0; round < 60; round++) {
      // A valid file of a few records, then one random mutation.
      const parts: Buffer[] = [];
      const ends: number[] = [];
      let length = 0;
      for (let i = 0; i < 1 + Math.floor(rnd() * 6); i++) {
        const size = 1 + Math.floor(rnd() * 5000);
        const offset = Math.floor(rnd() * (diskSize - size));
        const zero = rnd() < 0.3;
        const payload = zero ? undefined : testPattern(round * 10 + i, size);
        const header = encodeRecordHeader(offset, size, payload);
        parts.push(header, ...(payload ? [Buffer.from(payload)] : []));
        length += RECORD_HEADER_SIZE + (payload?.length ?? 0);
        ends.push(length);
      }
      const bytes = Buffer.concat(parts);
      const kind = round % 3;
      let damagedAt: number;
      let file = bytes;
      if (kind === 0) {
        damagedAt = Math.floor(rnd() * bytes.length); // flip one byte
        file = Buffer.from(bytes);
        file[damagedAt]! ^= 1 + Math.floor(rnd() * 255);
      } else if (kind === 1) {
        damagedAt = Math.floor(rnd() * bytes.length); // torn tail
        file = bytes.subarray(0, damagedAt);
      } else {
        damagedAt = bytes.length; // garbage appended
        file = Buffer.concat([bytes, Buffer.from(testPattern(round, 1 + Math.floor(rnd() * 40)))]);
      }
      const path = join(dir, `overlay-${round}`);
      const fh = await open(path, 'w+');
      await fh.write(file, 0, file.length, 0);
      const result = await walkRecords(fh, { end: file.length, diskSize, what: 'test' });
      await fh.close();
      // Every record ending before the damage survives; the one holding it (and all after) do not.
      const expected = [0, ...ends].filter((end) => end <= damagedAt).at(-1)!;
      expect(result.validEnd, `round ${round}, kind ${kind}`).toBe(kind === 2 ? bytes.length : expected);
    }
  });
});

describe('allocation maps', () => {
  it('merge set bits into exact extents and round-trip through encode/decode', () => {
    const rnd = random(7);
    for (let round = 0; round < 50; round++) {
      const size = 1 + Math.floor(rnd() * 40 * ALLOCATION_GRANULE);
      const map = new AllocationMap(size);
      const blocks = Math.ceil(size / ALLOCATION_GRANULE);
      const set = new Set<number>();
      for (let b = 0; b < blocks; b++) {
        if (rnd() < (round % 2 ? 0.2 : 0.8)) {
          map.set(b);
          set.add(b);
        }
      }
      const extents = [...AllocationMap.decode(map.encode(), size, 'test').extents()];
      const covered = new Set<number>();
      let end = -1;
      for (const e of extents) {
        expect(e.offset).toBeGreaterThan(end); // sorted, not even touching (merged)
        expect(e.offset % ALLOCATION_GRANULE).toBe(0);
        end = e.offset + e.length;
        expect(end).toBeLessThanOrEqual(size);
        for (let b = e.offset / ALLOCATION_GRANULE; b * ALLOCATION_GRANULE < end; b++) covered.add(b);
      }
      expect([...covered].sort((a, b) => a - b)).toEqual([...set].sort((a, b) => a - b));
    }
  });

  it('refuses damaged or mismatched maps with E_FORMAT', () => {
    const map = new AllocationMap(10 * ALLOCATION_GRANULE);
    map.set(3);
    const good = map.encode();
    expect(() => AllocationMap.decode(good, 11 * ALLOCATION_GRANULE, 'f')).toThrow(/describes/);
    const rnd = random(3);
    for (let i = 0; i < 200; i++) {
      const bad = Buffer.from(good);
      bad[Math.floor(rnd() * bad.length)]! ^= 1 + Math.floor(rnd() * 255);
      let error: unknown;
      try {
        AllocationMap.decode(bad, 10 * ALLOCATION_GRANULE, 'f');
      } catch (e) {
        error = e;
      }
      expect(isReplikitError(error, 'E_FORMAT')).toBe(true);
    }
  });
});

describe('vm.json', () => {
  it('either parses or fails with E_FORMAT / E_INPUT, for any mutation', () => {
    const good = {
      name: 'vm',
      cpus: 2,
      memoryMiB: 512,
      networks: ['lan'],
      disks: [{ id: 'd0', file: 'd0.raw', size: 4096, label: 'system' }],
      powerState: 'stopped',
      bootCount: 0,
      replica: { state: 'ready', writeGeneration: 3, sourceVm: 'src' },
    };
    expect(parseVmJson(JSON.stringify(good), 'vm.json')).toEqual(good);
    const values: unknown[] = [null, -1, 1.5, '', 'x', '../x', [], {}, true, 2 ** 60, '\u0000'];
    const rnd = random(11);
    const text = JSON.stringify(good);
    for (let i = 0; i < 300; i++) {
      let candidate: string;
      if (i % 2) {
        // Replace one field (possibly nested) with a hostile value.
        const copy = JSON.parse(text);
        const paths: Array<[Record<string, unknown>, string]> = [
          ...Object.keys(copy).map((k): [Record<string, unknown>, string] => [copy, k]),
          ...Object.keys(copy.disks[0]).map((k): [Record<string, unknown>, string] => [copy.disks[0], k]),
          ...Object.keys(copy.replica).map((k): [Record<string, unknown>, string] => [copy.replica, k]),
        ];
        const [target, key] = paths[Math.floor(rnd() * paths.length)]!;
        target[key] = values[Math.floor(rnd() * values.length)];
        candidate = JSON.stringify(copy);
      } else {
        // Damage the text itself.
        const at = Math.floor(rnd() * text.length);
        candidate = text.slice(0, at) + String.fromCharCode(32 + Math.floor(rnd() * 90)) + text.slice(at + 1);
      }
      try {
        parseVmJson(candidate, 'vm.json');
      } catch (error) {
        expect(isReplikitError(error, 'E_FORMAT') || isReplikitError(error, 'E_INPUT'), String(error)).toBe(true);
      }
    }
  });
});
