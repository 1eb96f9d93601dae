import { createHash, randomFillSync } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { recordHeader } from '../src/block-store/pack-format.js';
import { decodeChunk, encodeChunk, FileBlockStore } from '../src/index.js';

const BLOCK = 65536;
let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'replikit-store-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Writes a version of one disk from `image` (null entries are zero blocks). */
async function backup(store: FileBlockStore, runId: string, image: Uint8Array, baseVersion?: string) {
  const session = await store.begin({
    vm: 'vm1',
    runId,
    blockSize: BLOCK,
    disks: [{ id: 'd0', size: image.length }],
    ...(baseVersion ? { baseVersion } : {}),
  });
  const disk = session.disk('d0');
  for (let i = 0; i * BLOCK < image.length; i++) {
    const block = image.subarray(i * BLOCK, (i + 1) * BLOCK);
    if (block.some((b) => b !== 0)) await disk.put(i, block);
  }
  await session.close();
  return store.commitPending('vm1', runId);
}

function image(blocks: number, seed: number): Uint8Array {
  const data = new Uint8Array(blocks * BLOCK - 1000);
  for (let i = 0; i < blocks; i++) {
    if ((i + seed) % 3 === 0) continue; // some zero blocks
    if ((i + seed) % 3 === 1) randomFillSync(data, i * BLOCK, Math.min(BLOCK, data.length - i * BLOCK));
    else data.fill(i % 7, i * BLOCK, Math.min((i + 1) * BLOCK, data.length)); // compressible
  }
  return data;
}

async function restored(store: FileBlockStore, id: string, size: number): Promise<Buffer> {
  const out = join(dir, `restore-${id}.raw`);
  await store.restore('vm1', id, 'd0', out);
  const data = await readFile(out);
  expect(data.length).toBe(size);
  return data;
}

describe('block store', () => {
  it('restores a version whose blocks repeat a few chunks many times (the repeats written from the checked copies) byte-identical', async () => {
    const store = new FileBlockStore(dir);
    const data = new Uint8Array(600 * BLOCK); // batch buffers (4 MiB) are reused: nothing kept may alias them
    const patterns = [randomFillSync(new Uint8Array(BLOCK)), new Uint8Array(BLOCK).fill(5)];
    for (let i = 0; i < 600; i++) {
      if (i % 5 === 4) continue; // holes among them
      if (i % 7 === 0)
        randomFillSync(data, i * BLOCK, BLOCK); // unique blocks among them
      else data.set(patterns[i % 2]!, i * BLOCK);
    }
    await backup(store, 'run-1', data);
    expect((await restored(store, 'run-1', data.length)).equals(data)).toBe(true);
  });

  it('restores a version byte-identical, dedups equal blocks and compresses what compresses', async () => {
    const store = new FileBlockStore(dir);
    const data = image(12, 0);
    data.copyWithin(0, 2 * BLOCK, 3 * BLOCK); // block 0 equals block 2
    const info = await backup(store, 'run-1', data);
    expect(info?.id).toBe('run-1');
    expect(Buffer.compare(await restored(store, 'run-1', data.length), data)).toBe(0);
    expect((await store.list('vm1')).map((v) => v.id)).toEqual(['run-1']);
    const report = await store.verify('vm1', 'run-1');
    expect(report.bad).toEqual([]);
    expect(report.chunks).toBe(8); // 9 non-zero blocks, two of them equal
  });

  it('inherits unchanged blocks from the base version', async () => {
    const store = new FileBlockStore(dir);
    const v1 = image(10, 1);
    await backup(store, 'run-1', v1);
    const v2 = Uint8Array.from(v1);
    randomFillSync(v2, 3 * BLOCK, 4096);
    const session = await store.begin({
      vm: 'vm1',
      runId: 'run-2',
      blockSize: BLOCK,
      disks: [{ id: 'd0', size: v2.length }],
      baseVersion: 'run-1',
    });
    await session.disk('d0').put(3, v2.subarray(3 * BLOCK, 4 * BLOCK)); // only the changed block
    await session.close();
    await store.commitPending('vm1', 'run-2');
    expect(Buffer.compare(await restored(store, 'run-2', v2.length), v2)).toBe(0);
    expect(Buffer.compare(await restored(store, 'run-1', v1.length), v1)).toBe(0);
  });

  it('verify names a chunk with a flipped bit in its pack, and restore refuses it', async () => {
    const store = new FileBlockStore(dir);
    const data = image(6, 2);
    await backup(store, 'run-1', data);
    const pack = (await readdir(join(dir, 'packs'))).find((name) => name.endsWith('.pack'))!;
    const path = join(dir, 'packs', pack);
    const bytes = await readFile(path);
    // the first record: an 8-byte pack header, a 48-byte record header (address at 4..36), payload
    const name = bytes.subarray(8 + 4, 8 + 36).toString('hex');
    bytes[8 + 48 + 20]! ^= 0x10;
    await writeFile(path, bytes);
    const fresh = new FileBlockStore(dir);
    const report = await fresh.verify('vm1', 'run-1');
    expect(report.bad.map((bad) => bad.address)).toEqual([name]);
    await expect(fresh.restore('vm1', 'run-1', 'd0', join(dir, 'out.raw'))).rejects.toMatchObject({
      code: expect.stringMatching(/E_VERIFY|E_FORMAT/),
    });
  });

  it('restore refuses a record whose checksums hold but whose content is another chunk, and leaves no file', async () => {
    const store = new FileBlockStore(dir);
    const data = new Uint8Array(40 * BLOCK);
    randomFillSync(data); // raw chunks of equal length: a record's payload can be swapped for another's
    await backup(store, 'run-1', data);
    const pack = (await readdir(join(dir, 'packs'))).find((name) => name.endsWith('.pack'))!;
    const path = join(dir, 'packs', pack);
    const bytes = await readFile(path);
    // Record k starts at 8 + k * (48 + payload); give record 30 (late: checks are in flight) record 31's
    // payload under a header rebuilt for it, so both CRCs pass and only the content address can tell.
    const payload = (bytes.length - 8) / 40 - 48;
    const record = (k: number) => 8 + k * (48 + payload);
    const address = bytes.subarray(record(30) + 4, record(30) + 36);
    const other = Buffer.from(bytes.subarray(record(31) + 48, record(31) + 48 + payload));
    recordHeader(address, other).copy(bytes, record(30));
    other.copy(bytes, record(30) + 48);
    await writeFile(path, bytes);
    const out = join(dir, 'out.raw');
    await expect(new FileBlockStore(dir).restore('vm1', 'run-1', 'd0', out)).rejects.toMatchObject({
      code: 'E_VERIFY',
      message: expect.stringContaining('does not match its address'),
    });
    expect((await readdir(dir)).filter((name) => name.startsWith('out.raw'))).toEqual([]);
  });

  it('gc after deleting a version keeps every other version restorable', async () => {
    const store = new FileBlockStore(dir);
    const v1 = image(8, 0);
    const v2 = image(8, 1);
    const v3 = Uint8Array.from(v2);
    randomFillSync(v3, 0, BLOCK);
    await backup(store, 'run-1', v1);
    await backup(store, 'run-2', v2);
    await backup(store, 'run-3', v3, 'run-2');
    await store.delete('vm1', 'run-1'); // its pack holds nothing another version uses
    const report = await store.gc();
    expect(report.deleted).toBeGreaterThan(0);
    expect(Buffer.compare(await restored(store, 'run-2', v2.length), v2)).toBe(0);
    expect(Buffer.compare(await restored(store, 'run-3', v3.length), v3)).toBe(0);
    expect((await store.verify('vm1', 'run-3')).bad).toEqual([]);
    await expect(store.restore('vm1', 'run-1', 'd0', join(dir, 'x.raw'))).rejects.toMatchObject({
      code: 'E_NOT_FOUND',
    });
  });

  it('keeps the chunks of a crashed pending version through gc, and a committed one needs no pending', async () => {
    const store = new FileBlockStore(dir);
    const data = image(6, 0);
    const session = await store.begin({
      vm: 'vm1',
      runId: 'run-9',
      blockSize: BLOCK,
      disks: [{ id: 'd0', size: data.length }],
    });
    await session.disk('d0').put(1, data.subarray(BLOCK, 2 * BLOCK));
    await session.close();
    // pretend its writer died: the pid in its spec is not alive
    const specPath = join(dir, 'pending', 'vm1', 'run-9', 'spec.json');
    await writeFile(specPath, JSON.stringify({ ...JSON.parse(await readFile(specPath, 'utf8')), pid: 2 ** 22 + 7 }));
    const report = await store.gc();
    expect(report.kept).toBe(1);
    expect(report.deleted).toBe(0);
    expect(await store.list('vm1')).toEqual([]);
  });

  it('refuses gc while a live process writes a version', async () => {
    const store = new FileBlockStore(dir);
    const session = await store.begin({
      vm: 'vm1',
      runId: 'run-1',
      blockSize: BLOCK,
      disks: [{ id: 'd0', size: BLOCK }],
    });
    const other = new FileBlockStore(dir);
    // this process is the writer; the store allows its own pid, so fake another live pid (1, init)
    const specPath = join(dir, 'pending', 'vm1', 'run-1', 'spec.json');
    await writeFile(specPath, JSON.stringify({ ...JSON.parse(await readFile(specPath, 'utf8')), pid: 1 }));
    await expect(other.gc()).rejects.toMatchObject({ code: 'E_CONFLICT' });
    await session.close();
  });
});

describe('chunk codec', () => {
  it('round-trips and never decodes garbage into anything but a FormatError', () => {
    const plain = randomFillSync(new Uint8Array(5000));
    expect(Buffer.from(decodeChunk(encodeChunk(plain), 'c')).equals(plain)).toBe(true);
    const text = new Uint8Array(65536).fill(65);
    expect(encodeChunk(text).length).toBeLessThan(2000);
    for (let i = 0; i < 2000; i++) {
      const junk = randomFillSync(new Uint8Array(1 + (i % 300)));
      if (i % 2) junk[0] = 1;
      try {
        const out = decodeChunk(junk, 'junk');
        expect(out.length).toBeLessThanOrEqual(16 * 1024 * 1024);
      } catch (error) {
        expect((error as { code?: string }).code).toBe('E_FORMAT');
      }
    }
    const digest = createHash('sha256').update(plain).digest('hex');
    expect(digest).toHaveLength(64);
  });
});
