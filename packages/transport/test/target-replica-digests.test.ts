// Issue 17: a target driver that digests its replica where it lives (Hypervisor.replicaDigests)
// spares the replica's reads; one that cannot (undefined) is read and hashed as before.
import { randomBytes } from 'node:crypto';
import type {
  BlockDigest,
  DiskReader,
  DiskRef,
  DiskWriter,
  Hypervisor,
  Replica,
  ReplicaDigestsFrom,
} from '@replikit/core';
import { TransportError, UnsupportedError } from '@replikit/core';
import { createNodeHasher } from '@replikit/core/internal';
import { describe, expect, it } from 'vitest';
import { TargetDisk } from '../src/wire/block-target.js';

const BLOCK = 64 * 1024;
const SIZE = 5 * BLOCK + 4096; // a short last block

function setup(hook: ((disk: DiskRef, from: ReplicaDigestsFrom) => AsyncIterable<BlockDigest> | undefined) | null) {
  const image = new Uint8Array(randomBytes(SIZE));
  image.fill(0, BLOCK, 2 * BLOCK); // block 1 reads as zeros
  const reads: Array<[number, number]> = [];
  const asked: ReplicaDigestsFrom[] = [];
  const disk: DiskRef = { id: 'd', vmId: 'r', size: SIZE };
  const reader: DiskReader = {
    size: SIZE,
    blockSize: 4096,
    async *allocated() {
      yield { offset: 0, length: SIZE };
    },
    async read(offset, length) {
      reads.push([offset, length]);
      return image.slice(offset, offset + length);
    },
    async close() {},
  };
  const writer = { size: SIZE, async close() {} } as unknown as DiskWriter;
  const hypervisor = {
    openReader: async () => reader,
    ...(hook
      ? {
          replicaDigests: (d: DiskRef, from: ReplicaDigestsFrom) => {
            asked.push(from);
            return hook(d, from);
          },
        }
      : {}),
  } as unknown as Hypervisor;
  const hasher = createNodeHasher('sha256');
  const target = new TargetDisk(hypervisor, {} as Replica, disk, writer, BLOCK, hasher);
  return { image, reads, asked, target, hasher };
}

/** What the target's own read-and-hash path yields for `image` from block `from`. */
async function expected(image: Uint8Array, from: number): Promise<BlockDigest[]> {
  const hasher = createNodeHasher('sha256');
  const out: BlockDigest[] = [];
  for (let i = from; i * BLOCK < image.length; i++) {
    const block = image.subarray(i * BLOCK, Math.min((i + 1) * BLOCK, image.length));
    out.push({ index: i, digest: block.every((b) => b === 0) ? null : (await hasher.hash([block]))[0]! });
  }
  return out;
}

async function collect(digests: AsyncIterable<BlockDigest>): Promise<BlockDigest[]> {
  const out: BlockDigest[] = [];
  for await (const d of digests) out.push(d);
  return out;
}

describe('TargetDisk.digests with a driver that digests its replica itself', () => {
  it("yields the driver's digests and reads nothing of the replica", async () => {
    let image = new Uint8Array();
    const { reads, asked, target, ...rest } = setup(async function* (_disk, from) {
      yield* await expected(image, from.fromBlock);
    });
    image = rest.image;
    const digests = await collect(target.digests(2));
    expect(digests).toEqual(await expected(image, 2));
    expect(asked).toEqual([{ fromBlock: 2, blockSize: BLOCK, algorithm: 'sha256' }]);
    expect(reads).toEqual([]);
    expect(target.bytesRead).toBe(0);
  });

  it('reads and hashes the replica as before when the driver answers undefined', async () => {
    const { image, reads, asked, target } = setup(() => undefined);
    const digests = await collect(target.digests(0));
    expect(digests).toEqual(await expected(image, 0));
    expect(asked).toHaveLength(1);
    expect(reads.length).toBeGreaterThan(0);
    expect(target.bytesRead).toBe(SIZE);
  });

  it('reads as before when the driver says E_UNSUPPORTED before its first digest; fails on any other error', async () => {
    const { image, target } = setup(async function* () {
      yield* [];
      throw new UnsupportedError("the agent cannot digest with 'xxh128'");
    });
    expect(await collect(target.digests(0))).toEqual(await expected(image, 0));
    expect(target.bytesRead).toBe(SIZE);
    const broken = setup(async function* () {
      yield* [];
      throw new TransportError('the appliance went away');
    });
    await expect(collect(broken.target.digests(0))).rejects.toMatchObject({ code: 'E_TRANSPORT' });
    expect(broken.reads).toEqual([]);
  });

  it('refuses driver digests out of order, of the wrong length or that stop short', async () => {
    const wrongIndex = setup(async function* () {
      yield { index: 1, digest: null };
    });
    await expect(collect(wrongIndex.target.digests(0))).rejects.toThrow(/block 1 .* block 0 was expected/);
    const wrongLength = setup(async function* () {
      yield { index: 0, digest: new Uint8Array(20) };
    });
    await expect(collect(wrongLength.target.digests(0))).rejects.toThrow(/20 bytes/);
    const short = setup(async function* () {});
    await expect(collect(short.target.digests(3))).rejects.toThrow(/end at block 3 of 6/);
  });
});
