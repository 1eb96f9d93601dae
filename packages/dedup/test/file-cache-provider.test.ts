import { randomFillSync } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BlockDigest, CacheExpectation, CacheWriter } from '@replikit/core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FileCacheProvider } from '../src/index.js';

let dir: string;
const key = { job: 'job1', diskId: 'system' };
const expect16 = (fingerprint = 'fp-1'): CacheExpectation => ({
  blockSize: 65536,
  blockCount: 100,
  digest: 'xxh128',
  fingerprint,
});

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'replikit-cache-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function collect(iterable: AsyncIterable<BlockDigest>): Promise<BlockDigest[]> {
  const out: BlockDigest[] = [];
  for await (const item of iterable) out.push(item);
  return out;
}

/** Closes the writer of run `run-2`'s cache of 100 blocks, seals it and reads every entry back. */
async function sealAndRead(provider: FileCacheProvider, writer: CacheWriter): Promise<BlockDigest[]> {
  await writer.checkpoint(100);
  await writer.close();
  expect(await provider.commitPending(key, 'run-2', 'fp-2')).toBe(true);
  const next = await provider.open(key, expect16('fp-2'));
  if (next.status !== 'ok') throw new Error(next.status);
  const all = await collect(next.reader.digests(0));
  await next.reader.close();
  return all;
}

/** Writes a cache of 100 blocks: digests for even blocks, zeros (null) for odd ones. */
async function writeCache(provider: FileCacheProvider, runId = 'run-1', fingerprint = 'fp-1') {
  const digests = Array.from({ length: 100 }, (_, i) => (i % 2 === 0 ? randomFillSync(new Uint8Array(16)) : null));
  const writer = await provider.begin(key, { runId, blockSize: 65536, blockCount: 100, digest: 'xxh128' }, 0);
  for (const [i, d] of digests.entries()) if (d) await writer.append(i, d);
  await writer.checkpoint(100);
  await writer.close();
  expect(await provider.commitPending(key, runId, fingerprint)).toBe(true);
  return digests;
}

describe('file replication cache', () => {
  it('round-trips digests and zero blocks, from any block', async () => {
    const provider = new FileCacheProvider(dir);
    const digests = await writeCache(provider);
    const opened = await provider.open(key, expect16());
    expect(opened.status).toBe('ok');
    if (opened.status !== 'ok') return;
    const all = await collect(opened.reader.digests(0));
    expect(all.map((d) => d.index)).toEqual(digests.map((_, i) => i));
    for (const [i, d] of all.entries()) {
      if (digests[i]) expect(Buffer.from(d.digest!).equals(digests[i]!)).toBe(true);
      else expect(d.digest).toBeNull();
    }
    expect((await collect(opened.reader.digests(97))).map((d) => d.index)).toEqual([97, 98, 99]);
    await opened.reader.close();
    expect(await readdir(join(dir, 'job1'))).toEqual(['system.rkc']); // no temp file left
  });

  it('reads single entries at random and carries ranges in bulk into the next cache', async () => {
    const provider = new FileCacheProvider(dir);
    const digests = await writeCache(provider);
    const opened = await provider.open(key, expect16());
    if (opened.status !== 'ok') throw new Error(opened.status);
    const reader = opened.reader;
    for (const i of [99, 0, 51, 50, 7]) {
      const got = await reader.digestAt!(i);
      if (digests[i]) expect(Buffer.from(got!).equals(digests[i]!)).toBe(true);
      else expect(got).toBeNull();
    }
    await expect(reader.digestAt!(100)).rejects.toThrow(/outside/);
    // The next run: blocks 10 and 60 changed, everything else carried.
    const writer = await provider.begin(
      key,
      { runId: 'run-2', blockSize: 65536, blockCount: 100, digest: 'xxh128' },
      0,
    );
    const changed = randomFillSync(new Uint8Array(16));
    expect(await writer.carry!(reader, 0, 10)).toBe(true);
    await writer.append(10, changed);
    expect(await writer.carry!(reader, 11, 60)).toBe(true);
    await writer.append(60, null);
    expect(await writer.carry!(reader, 61, 100)).toBe(true);
    await expect(writer.carry!(reader, 50, 60)).rejects.toThrow(/out of order/);
    expect(await writer.carry!({ digests: reader.digests, close: async () => {} }, 99, 100)).toBe(false);
    await reader.close();
    const all = await sealAndRead(provider, writer);
    for (const [i, d] of all.entries()) {
      const want = i === 10 ? changed : i === 60 ? null : digests[i];
      if (want) expect(Buffer.from(d.digest!).equals(want)).toBe(true);
      else expect(d.digest).toBeNull();
    }
  });

  it('is missing before the first run', async () => {
    expect((await new FileCacheProvider(dir).open(key, expect16())).status).toBe('missing');
  });

  it('is invalid for another fingerprint, block size, count or digest', async () => {
    const provider = new FileCacheProvider(dir);
    await writeCache(provider);
    const cases: Array<[Partial<CacheExpectation>, RegExp]> = [
      [{ fingerprint: 'fp-2' }, /replica changed/],
      [{ blockSize: 32768 }, /written for/],
      [{ blockCount: 101 }, /written for/],
      [{ digest: 'sha256' }, /another digest/],
    ];
    for (const [change, reason] of cases) {
      const opened = await provider.open(key, { ...expect16(), ...change });
      expect(opened).toMatchObject({ status: 'invalid', reason: expect.stringMatching(reason) });
    }
  });

  it('discards a corrupt, truncated or foreign file', async () => {
    const provider = new FileCacheProvider(dir);
    await writeCache(provider);
    const path = join(dir, 'job1', 'system.rkc');
    const good = await readFile(path);

    const flipped = Buffer.from(good);
    flipped[64 + 40]! ^= 1;
    await writeFile(path, flipped);
    expect(await provider.open(key, expect16())).toMatchObject({
      status: 'invalid',
      reason: expect.stringMatching(/corrupt/),
    });

    await writeFile(path, good);
    await truncate(path, good.length - 10);
    expect(await provider.open(key, expect16())).toMatchObject({
      status: 'invalid',
      reason: expect.stringMatching(/truncated/),
    });

    await writeFile(path, Buffer.from('this is not a cache file at all, just some text'.repeat(3)));
    expect(await provider.open(key, expect16())).toMatchObject({
      status: 'invalid',
      reason: expect.stringMatching(/magic/),
    });

    await writeFile(path, Buffer.alloc(10));
    expect((await provider.open(key, expect16())).status).toBe('invalid');
  });

  it('continues a pending cache after a crash, from the checkpoint', async () => {
    const provider = new FileCacheProvider(dir);
    const digests = Array.from({ length: 100 }, () => randomFillSync(new Uint8Array(16)));
    const first = await provider.begin(key, { runId: 'r', blockSize: 65536, blockCount: 100, digest: 'xxh128' }, 0);
    for (let i = 0; i < 60; i++) await first.append(i, digests[i]!);
    await first.checkpoint(40); // durable below 40; 40..59 were appended but not checkpointed
    await first.close();
    const again = await provider.begin(key, { runId: 'r', blockSize: 65536, blockCount: 100, digest: 'xxh128' }, 40);
    expect(again.resumedFrom).toBe(40);
    for (let i = 40; i < 100; i++) await again.append(i, digests[i]!);
    await again.close();
    await provider.commitPending(key, 'r', 'fp');
    const opened = await provider.open(key, { ...expect16('fp') });
    if (opened.status !== 'ok') throw new Error(opened.status);
    const all = await collect(opened.reader.digests(0));
    expect(all.every((d, i) => Buffer.from(d.digest!).equals(digests[i]!))).toBe(true);
    await opened.reader.close();
  });

  it('starts over when the pending file of a resumed run is gone, and says so', async () => {
    const provider = new FileCacheProvider(dir);
    const writer = await provider.begin(
      key,
      { runId: 'gone', blockSize: 65536, blockCount: 100, digest: 'xxh128' },
      30,
    );
    expect(writer.resumedFrom).toBe(0);
    await writer.close();
    await provider.abortPending(key, 'gone');
    expect(await provider.commitPending(key, 'gone', 'fp')).toBe(false);
  });

  it('copies entries out in bulk and appends them in bulk, with gaps as zeros', async () => {
    const provider = new FileCacheProvider(dir);
    const digests = await writeCache(provider);
    const opened = await provider.open(key, expect16());
    if (opened.status !== 'ok') throw new Error(opened.status);
    const reader = opened.reader;
    const entries = new Uint8Array(30 * 16);
    await reader.copyEntries!(entries, 35, 30);
    for (let i = 0; i < 30; i++) {
      const want = digests[35 + i] ?? new Uint8Array(16);
      expect(Buffer.from(entries.subarray(i * 16, (i + 1) * 16)).equals(want)).toBe(true);
    }
    await expect(reader.copyEntries!(entries, 90, 11)).rejects.toMatchObject({ code: 'E_INPUT' });
    await expect(reader.copyEntries!(entries, 0, 31)).rejects.toMatchObject({ code: 'E_INPUT' });

    // Entries 35–64 at 35, nothing before (zeros), then single appends, then bulk again.
    const writer = await provider.begin(
      key,
      { runId: 'run-2', blockSize: 65536, blockCount: 100, digest: 'xxh128' },
      0,
    );
    await writer.appendEntries!(35, entries);
    await writer.append(70, digests[70]!);
    const tail = new Uint8Array(29 * 16);
    await reader.copyEntries!(tail, 71, 29);
    await writer.appendEntries!(71, tail);
    await expect(writer.appendEntries!(80, tail)).rejects.toMatchObject({ code: 'E_INPUT' }); // out of order
    await expect(writer.appendEntries!(100, new Uint8Array(8))).rejects.toMatchObject({ code: 'E_INPUT' });
    await reader.close();
    const got = await sealAndRead(provider, writer);
    const want = digests.map((d, i) => ((i >= 35 && i < 65) || i >= 70 ? d : null));
    expect(got.map((g) => g.digest && Buffer.from(g.digest).toString('hex'))).toEqual(
      want.map((d) => d && Buffer.from(d).toString('hex')),
    );
  });

  it('refuses entries out of order and hostile job names', async () => {
    const provider = new FileCacheProvider(dir);
    const writer = await provider.begin(key, { runId: 'r', blockSize: 65536, blockCount: 10, digest: 'xxh128' }, 0);
    await writer.append(5, new Uint8Array(16).fill(1));
    await expect(writer.append(3, new Uint8Array(16))).rejects.toMatchObject({ code: 'E_INPUT' });
    await expect(writer.append(10, new Uint8Array(16))).rejects.toMatchObject({ code: 'E_INPUT' });
    await writer.close();
    await expect(provider.open({ job: '../etc', diskId: 'x' }, expect16())).rejects.toMatchObject({ code: 'E_INPUT' });
  });
});
