import { spawn } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { INDEX_ENTRY_BYTES, PACK_MAGIC, RECORD_HEADER_BYTES } from '../src/block-store/pack-format.js';
import { encodeChunk, FileBlockStore } from '../src/index.js';

const BLOCK = 65536;
let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'replikit-packs-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A version of one disk from `blocks` (each one block, random so nothing compresses). */
async function backup(store: FileBlockStore, runId: string, blocks: Uint8Array[]) {
  const session = await store.begin({
    vm: 'vm1',
    runId,
    blockSize: BLOCK,
    disks: [{ id: 'd0', size: blocks.length * BLOCK }],
  });
  const disk = session.disk('d0');
  for (const [i, block] of blocks.entries()) await disk.put(i, block);
  await session.close();
  await store.commitPending('vm1', runId);
}

const randomBlocks = (count: number) => Array.from({ length: count }, () => randomFillSync(new Uint8Array(BLOCK)));

async function restoredEquals(store: FileBlockStore, runId: string, blocks: Uint8Array[]): Promise<boolean> {
  const out = join(dir, `${runId}.raw`);
  await store.restore('vm1', runId, 'd0', out);
  return Buffer.compare(await readFile(out), Buffer.concat(blocks)) === 0;
}

async function packs(): Promise<string[]> {
  return (await readdir(join(dir, 'packs'))).filter((name) => name.endsWith('.pack')).sort();
}

/** Renames a pack (and its index) as if a process that is not alive had written it. */
async function orphan(pack: string): Promise<string> {
  const parts = pack.split('-');
  parts[2] = String(2 ** 22 + 11);
  const name = parts.join('-');
  const { rename } = await import('node:fs/promises');
  await rename(join(dir, 'packs', pack), join(dir, 'packs', name));
  await rename(join(dir, 'packs', `${pack}.idx`), join(dir, 'packs', `${name}.idx`));
  return name;
}

describe('pack files', () => {
  it('appends chunks to packs of about the target size, each with an index', async () => {
    const store = new FileBlockStore(dir, { packTargetBytes: 256 * 1024 });
    const blocks = randomBlocks(12);
    await backup(store, 'run-1', blocks);
    const names = await packs();
    expect(names.length).toBe(3); // 4 blocks of 64 KiB reach 256 KiB
    for (const name of names) {
      const idx = await stat(join(dir, 'packs', `${name}.idx`));
      expect(idx.size).toBe(4 * INDEX_ENTRY_BYTES);
    }
    expect(await restoredEquals(new FileBlockStore(dir), 'run-1', blocks)).toBe(true);
  });

  it('cuts a torn pack tail of a dead writer, and keeps every whole record', async () => {
    const store = new FileBlockStore(dir);
    const blocks = randomBlocks(5);
    await backup(store, 'run-1', blocks);
    const pack = await orphan((await packs())[0]!);
    const path = join(dir, 'packs', pack);
    const whole = (await stat(path)).size;
    // a half-written record: a header and part of its payload, as a crash mid-append leaves it
    const torn = Buffer.concat([await readFile(path), (await readFile(path)).subarray(PACK_MAGIC.length, 5000)]);
    await writeFile(path, torn);
    const reopened = new FileBlockStore(dir);
    expect(await restoredEquals(reopened, 'run-1', blocks)).toBe(true);
    expect(reopened.cutPacks).toEqual([pack]);
    expect((await stat(path)).size).toBe(whole);
    expect((await reopened.verify('vm1', 'run-1')).bad).toEqual([]);
  });

  it('rebuilds a lost or stale pack index from the pack', async () => {
    const store = new FileBlockStore(dir);
    const blocks = randomBlocks(6);
    await backup(store, 'run-1', blocks);
    const pack = await orphan((await packs())[0]!);
    const idx = join(dir, 'packs', `${pack}.idx`);
    await rm(idx);
    expect(await restoredEquals(new FileBlockStore(dir), 'run-1', blocks)).toBe(true);
    expect((await stat(idx)).size).toBe(6 * INDEX_ENTRY_BYTES);
    await truncate(idx, 2 * INDEX_ENTRY_BYTES + 7); // stale, with a torn last entry
    expect(await restoredEquals(new FileBlockStore(dir), 'run-1', blocks)).toBe(true);
    expect((await stat(idx)).size).toBe(6 * INDEX_ENTRY_BYTES);
  });

  it('skips a damaged record in the middle of a pack, never cutting the whole records after it', async () => {
    const store = new FileBlockStore(dir);
    const blocks = randomBlocks(6);
    await backup(store, 'run-1', blocks);
    const pack = await orphan((await packs())[0]!);
    const path = join(dir, 'packs', pack);
    const whole = (await stat(path)).size;
    const record = RECORD_HEADER_BYTES + encodeChunk(blocks[0]!).length; // random blocks: all the same size
    const bytes = await readFile(path);
    bytes[PACK_MAGIC.length + 2 * record + RECORD_HEADER_BYTES + 100]! ^= 0x55; // one byte of block 2's payload
    bytes[PACK_MAGIC.length + 4 * record + 10]! ^= 0x55; // one byte of block 4's header
    await writeFile(path, bytes);
    await rm(`${path}.idx`); // the pack is scanned: its index is lost
    const reopened = new FileBlockStore(dir);
    const report = await reopened.verify('vm1', 'run-1');
    expect(report.bad.map((bad) => bad.address).sort()).toEqual(
      [2, 4].map((i) => createHash('sha256').update(blocks[i]!).digest('hex')).sort(),
    );
    expect(reopened.cutPacks).toEqual([]);
    expect((await stat(path)).size).toBe(whole);
    for (const i of [0, 1, 3, 5]) {
      const address = createHash('sha256').update(blocks[i]!).digest('hex');
      expect(Buffer.compare(await new FileBlockStore(dir).readChunk(address), blocks[i]!)).toBe(0);
    }
    await expect(reopened.restore('vm1', 'run-1', 'd0', join(dir, 'out.raw'))).rejects.toThrow(/chunk/);
  });

  it('gc repacks a mostly dead pack and keeps every live chunk', async () => {
    const store = new FileBlockStore(dir);
    const shared = randomBlocks(2);
    const v1 = [...shared, ...randomBlocks(8)];
    const v2 = [...shared, ...randomBlocks(3)];
    await backup(store, 'run-1', v1);
    await backup(store, 'run-2', v2);
    const before = await packs();
    expect(before.length).toBe(2);
    await store.delete('vm1', 'run-1'); // run-1's pack: 2 of 10 records still live
    const report = await store.gc();
    expect(report).toMatchObject({ kept: 5, deleted: 8 });
    expect(report.bytesFreed).toBeGreaterThan(7 * BLOCK);
    const after = await packs();
    expect(after).not.toContain(before[0]);
    expect(after).toContain(before[1]);
    const reopened = new FileBlockStore(dir);
    expect(await restoredEquals(reopened, 'run-2', v2)).toBe(true);
    expect((await reopened.verify('vm1', 'run-2')).bad).toEqual([]);
    expect(await reopened.gc()).toMatchObject({ kept: 5, deleted: 0, bytesFreed: 0 });
  });

  it('gc reports the unused chunks it leaves in packs still mostly in use', async () => {
    const store = new FileBlockStore(dir);
    const v1 = randomBlocks(4);
    await backup(store, 'run-1', v1);
    await backup(store, 'run-2', [...v1.slice(0, 3), ...randomBlocks(1)]);
    await store.delete('vm1', 'run-1'); // run-1's pack: 3 of 4 records still live, not repacked
    const report = await store.gc();
    expect(report).toMatchObject({ kept: 4, deleted: 0, unused: 1 });
    expect(report.unusedBytes).toBeGreaterThan(BLOCK);
  });

  it('gc leaves a pack with a damaged live record in place, and collects the others', async () => {
    const store = new FileBlockStore(dir);
    const shared = randomBlocks(2);
    const v1 = [...shared, ...randomBlocks(8)];
    const v2 = [...shared, ...randomBlocks(3)];
    const v3 = randomBlocks(4);
    await backup(store, 'run-1', v1);
    await backup(store, 'run-2', v2);
    await backup(store, 'run-3', v3);
    const [first, , third] = await packs();
    const path = join(dir, 'packs', first!);
    const bytes = await readFile(path);
    bytes[PACK_MAGIC.length + RECORD_HEADER_BYTES + 100]! ^= 0x55; // shared[0], still named by run-2
    await writeFile(path, bytes);
    await store.delete('vm1', 'run-1');
    await store.delete('vm1', 'run-3');
    const report = await store.gc();
    expect(report).toMatchObject({ deleted: 4, damaged: 1 });
    expect(await packs()).toContain(first);
    expect(await packs()).not.toContain(third);
    const reopened = new FileBlockStore(dir);
    const address = createHash('sha256').update(shared[1]!).digest('hex');
    expect(Buffer.compare(await reopened.readChunk(address), shared[1]!)).toBe(0);
    expect((await reopened.verify('vm1', 'run-2')).bad.map((bad) => bad.address)).toEqual([
      createHash('sha256').update(shared[0]!).digest('hex'),
    ]);
  });

  it('verify forgets a damaged record, so that a run that reads the block again stores it anew', async () => {
    const store = new FileBlockStore(dir);
    const blocks = randomBlocks(4);
    await backup(store, 'run-1', blocks);
    const pack = await orphan((await packs())[0]!);
    const path = join(dir, 'packs', pack);
    const bytes = await readFile(path);
    const record = RECORD_HEADER_BYTES + encodeChunk(blocks[0]!).length;
    bytes[PACK_MAGIC.length + record + RECORD_HEADER_BYTES + 100]! ^= 0x55; // block 1's payload
    await writeFile(path, bytes);
    const damaged = createHash('sha256').update(blocks[1]!).digest('hex');
    const reopened = new FileBlockStore(dir);
    expect((await reopened.verify('vm1', 'run-1')).bad).toEqual([
      { address: damaged, reason: expect.stringMatching(/damaged/) },
    ]);
    await backup(new FileBlockStore(dir), 'run-2', blocks); // a full run: every block put again
    const healed = new FileBlockStore(dir);
    expect((await healed.verify('vm1', 'run-2')).bad).toEqual([]);
    expect((await healed.verify('vm1', 'run-1')).bad).toEqual([]); // the same content address
    expect(await restoredEquals(healed, 'run-1', blocks)).toBe(true);
  });

  it('a long-lived store notices packs another process collected, and stores their chunks anew', async () => {
    const daemon = new FileBlockStore(dir); // a daemon's store, alive across runs
    const blocks = randomBlocks(3);
    await backup(daemon, 'run-1', blocks);
    const other = new FileBlockStore(dir); // `replikit backup delete` and `gc`, another process
    await other.delete('vm1', 'run-1');
    expect(await other.gc()).toMatchObject({ deleted: 3 });
    await backup(daemon, 'run-2', blocks); // the same blocks again
    expect((await new FileBlockStore(dir).verify('vm1', 'run-2')).bad).toEqual([]);
  });

  it('refuses to restore onto a folder before reading anything, and leaves no partial file', async () => {
    const store = new FileBlockStore(dir);
    await backup(store, 'run-1', randomBlocks(2));
    const folder = join(dir, 'restored');
    await mkdir(folder);
    await expect(store.restore('vm1', 'run-1', 'd0', folder)).rejects.toMatchObject({ code: 'E_INPUT' });
    await expect(stat(`${folder}.restoring`)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('refuses to begin on a base it cannot inherit from, rather than reading its blocks as zeros', async () => {
    const store = new FileBlockStore(dir);
    await backup(store, 'run-1', randomBlocks(4));
    const spec = { vm: 'vm1', runId: 'run-2', blockSize: BLOCK, disks: [{ id: 'd0', size: 4 * BLOCK }] };
    expect(await store.canInherit({ ...spec, baseVersion: 'run-1' })).toBe(true);
    for (const other of [
      { ...spec, blockSize: 2 * BLOCK, baseVersion: 'run-1' },
      { ...spec, disks: [{ id: 'd0', size: 5 * BLOCK }], baseVersion: 'run-1' },
      { ...spec, disks: [...spec.disks, { id: 'd1', size: BLOCK }], baseVersion: 'run-1' },
      { ...spec, baseVersion: 'run-0' },
    ]) {
      expect(await store.canInherit(other)).toBe(false);
      await expect(store.begin(other)).rejects.toMatchObject({ code: 'E_CONFLICT' });
    }
    await expect(stat(join(dir, 'pending', 'vm1', 'run-2'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('reads a store written before packs (one file per chunk) as it is, and writes new chunks to packs', async () => {
    const blocks = randomBlocks(3);
    const table = Buffer.alloc(3 * 32);
    for (const [i, block] of blocks.entries()) {
      const address = createHash('sha256').update(block).digest();
      address.copy(table, i * 32);
      const hex = address.toString('hex');
      const folder = join(dir, 'chunks', hex.slice(0, 2), hex.slice(2, 4));
      await mkdir(folder, { recursive: true });
      await writeFile(join(folder, hex), encodeChunk(block));
    }
    await mkdir(join(dir, 'versions', 'vm1', 'old-1.d'), { recursive: true });
    await writeFile(join(dir, 'versions', 'vm1', 'old-1.d', 'd0.idx'), table);
    await writeFile(
      join(dir, 'versions', 'vm1', 'old-1.json'),
      JSON.stringify({
        id: 'old-1',
        vm: 'vm1',
        runId: 'old-1',
        createdAt: '2026-12-01T00:00:00.000Z',
        blockSize: BLOCK,
        disks: [{ id: 'd0', size: 3 * BLOCK }],
      }),
    );
    const store = new FileBlockStore(dir);
    expect(await restoredEquals(store, 'old-1', blocks)).toBe(true);
    expect((await store.verify('vm1', 'old-1')).bad).toEqual([]);
    const v2 = [blocks[0]!, ...randomBlocks(1), blocks[2]!];
    await backup(store, 'run-2', v2);
    const records = (await stat(join(dir, 'packs', (await packs())[0]!))).size;
    expect(records).toBe(PACK_MAGIC.length + RECORD_HEADER_BYTES + encodeChunk(v2[1]!).length); // only the new block
    expect(await restoredEquals(store, 'run-2', v2)).toBe(true);
    await store.delete('vm1', 'old-1');
    expect(await store.gc()).toMatchObject({ kept: 3, deleted: 1 });
    expect(await restoredEquals(new FileBlockStore(dir), 'run-2', v2)).toBe(true);
  });

  it('after SIGKILL of a writer, every chunk the index or the pending table names is readable', async () => {
    const require = createRequire(import.meta.url);
    const tsx = require.resolve('tsx');
    const child = spawn(
      process.execPath,
      // The workspace's sources, as the tests use them: a fresh clone has no dist/ yet.
      [
        '--conditions=@replikit/source',
        '--import',
        tsx,
        join(import.meta.dirname, 'fixtures', 'pack-writer-child.ts'),
        dir,
        'run-k',
      ],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    const exited = new Promise((resolve) => child.once('exit', resolve));
    let checkpoints = 0;
    await new Promise<void>((resolve, reject) => {
      child.once('exit', (code) => reject(new Error(`the writer exited (${code}) before its checkpoints`)));
      child.stdout.setEncoding('utf8');
      child.stdout.on('data', (text: string) => {
        checkpoints += text.split('\n').filter((line) => line.startsWith('checkpoint')).length;
        if (checkpoints >= 6) resolve(); // past a few pack rollovers (1 MiB packs)
      });
    });
    child.kill('SIGKILL');
    await exited;

    const store = new FileBlockStore(dir);
    const table = await readFile(join(dir, 'pending', 'vm1', 'run-k', 'd0.idx'));
    const named = new Set<string>();
    for (let at = 0; at < table.length; at += 32) {
      const entry = table.subarray(at, at + 32);
      if (entry.some((b) => b !== 0)) named.add(entry.toString('hex'));
    }
    for (const name of await packs()) {
      // A pack the writer had just opened when it was killed may have no index yet.
      const idx = await readFile(join(dir, 'packs', `${name}.idx`)).catch((error: NodeJS.ErrnoException) => {
        if (error.code === 'ENOENT') return Buffer.alloc(0);
        throw error;
      });
      for (let at = 0; at + INDEX_ENTRY_BYTES <= idx.length; at += INDEX_ENTRY_BYTES) {
        named.add(idx.subarray(at, at + 32).toString('hex'));
      }
    }
    expect(named.size).toBeGreaterThanOrEqual(6 * 16);
    const bad: string[] = [];
    for (const address of named) await store.readChunk(address).catch(() => bad.push(address));
    expect(bad).toEqual([]);
  }, 60_000);
});
