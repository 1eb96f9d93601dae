import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createFileDriver } from '@replikit/driver-file';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type Address, createRemoteTarget, type RemoteTargetDriver } from '../src/index.js';
import { startAgentProcess } from './helpers/agent-process.js';
import { createMixedVm, createWorld, type World } from './helpers/world.js';

/*
 * The agent's `source` feature (issue 17, ABD push): an authenticated peer reads the disks of the
 * agent's driver and asks for their block digests. The agent is a real process (the transport's
 * agent CLI with the file driver); every answer is checked against the disk file itself.
 */

const KiB = 1024;
const MiB = 1024 * KiB;
const key = randomBytes(32);
let world: World;
const stops: Array<() => Promise<void>> = [];

beforeEach(async () => {
  world = await createWorld();
});
afterEach(async () => {
  for (const stop of stops.splice(0)) await stop();
  await world.dispose();
});

async function agent(args: string[], root = world.vms): Promise<RemoteTargetDriver & { address: Address }> {
  const started = await startAgentProcess(['--root', root, '--psk-identity', 'tests', ...args], key.toString('hex'));
  const remote = createRemoteTarget({
    address: started.address,
    security: { kind: 'tls', psk: { identity: 'tests', key } },
  });
  stops.push(async () => {
    await remote.close();
    await started.stop();
  });
  return Object.assign(remote, { address: started.address });
}

describe('reads served by an agent (the source feature)', () => {
  it('reads any range of a listed disk equal to the file, across the 4 MiB request bound; digests equal sha256 of the blocks, null for zero blocks', async () => {
    const size = 9 * MiB + 4 * KiB;
    await createMixedVm(world, 'web', size);
    const file = await readFile(join(world.vms, 'web', 'd0.raw'));
    const remote = await agent(['--serve-reads']);
    const vm = await remote.getVM('web');
    const disk = vm.disks[0]!;
    expect(disk.size).toBe(size);
    const reader = remote.openSourceReader(vm.id, disk);
    try {
      expect(Buffer.compare(Buffer.from(await reader.read(0, size)), file)).toBe(0);
      expect(Buffer.compare(Buffer.from(await reader.read(12_345, 777)), file.subarray(12_345, 12_345 + 777))).toBe(0);
      const tail = size - 5000;
      expect(Buffer.compare(Buffer.from(await reader.read(tail, 5000)), file.subarray(tail))).toBe(0);
      // Past the end: refused on this side, nothing asked.
      await expect(reader.read(size - 10, 11)).rejects.toMatchObject({ code: 'E_INPUT' });
    } finally {
      await reader.close();
    }

    const blockSize = 64 * KiB;
    const digests = await remote.readDigests(vm.id, disk.id, {
      offset: 0,
      length: 2 * MiB,
      blockSize,
      algorithm: 'sha256',
    });
    expect(digests.length).toBe(32);
    digests.forEach((digest, i) => {
      const block = file.subarray(i * blockSize, (i + 1) * blockSize);
      if (block.every((b) => b === 0)) expect(digest).toBeNull();
      else expect(Buffer.from(digest!).toString('hex')).toBe(createHash('sha256').update(block).digest('hex'));
    });
    expect(digests.some((d) => d === null)).toBe(true);

    // The agent checks what it is asked: a range past the end, a disk its driver does not list.
    await expect(
      remote.readDigests(vm.id, disk.id, { offset: size - 512, length: 1024, blockSize, algorithm: 'sha256' }),
    ).rejects.toMatchObject({ code: 'E_INPUT', message: expect.stringContaining('outside disk') });
    const forged = remote.openSourceReader(vm.id, { ...disk, id: '../../etc/passwd', size: 4096 });
    await expect(forged.read(0, 4096)).rejects.toMatchObject({ code: 'E_NOT_FOUND' });
    // The connection went on after those refusals.
    expect((await remote.getVM('web')).disks.length).toBe(1);
  });

  it('an agent started without --serve-reads answers reads with E_INPUT; a peer with another key is refused', async () => {
    await createMixedVm(world, 'web', MiB);
    const remote = await agent([]);
    const vm = await remote.getVM('web');
    const reader = remote.openSourceReader(vm.id, vm.disks[0]!);
    await expect(reader.read(0, 4096)).rejects.toMatchObject({
      code: 'E_INPUT',
      message: expect.stringContaining("'readDisk'"),
    });
    await reader.close();

    const served = await agent(['--serve-reads']);
    await served.getVM('web');
    // The same agent, another key: the TLS-PSK handshake fails, nothing is read.
    const stranger = createRemoteTarget({
      address: served.address,
      security: { kind: 'tls', psk: { identity: 'tests', key: randomBytes(32) } },
      reconnect: { attempts: 1, initialDelayMs: 10, maxDelayMs: 10 },
    });
    try {
      await expect(stranger.openSourceReader('web', vm.disks[0]!).read(0, 4096)).rejects.toMatchObject({
        code: 'E_AUTH',
      });
    } finally {
      await stranger.close();
    }
  });

  it('pullDisk: a target agent dials a source agent that serves reads and copies only the blocks that differ', async () => {
    const size = 3 * MiB + 4 * KiB;
    await createMixedVm(world, 'web', size);
    const source = await agent(['--serve-reads']);
    const target = await agent([], world.replicas);
    const vm = await source.getVM('web');
    const replica = await target.ensureReplica({
      name: 'web-replica',
      source: vm,
      disks: [{ sourceDiskId: vm.disks[0]!.id, size }],
    });
    const request = {
      from: { ...source.address, identity: 'tests', key },
      vmId: vm.id,
      diskId: vm.disks[0]!.id,
      replica,
      disk: 0,
      blockSize: 64 * KiB,
      algorithm: 'sha256' as const,
      runId: 'pull-1',
    };
    const first = await target.pullDisk(request);
    const file = await readFile(join(world.vms, 'web', 'd0.raw'));
    const local = createFileDriver({ root: world.replicas });
    try {
      const reader = await local.openReader(replica.disks[0]!);
      expect(Buffer.compare(Buffer.from(await reader.read(0, size)), file)).toBe(0);
      await reader.close();
    } finally {
      await local.close();
    }
    // The new replica reads as zeros: exactly the source's non-zero blocks were copied.
    const block = 64 * KiB;
    const nonZero = Array.from({ length: Math.ceil(size / block) }, (_, i) =>
      file.subarray(i * block, (i + 1) * block),
    ).filter((b) => b.some((x) => x !== 0));
    expect(first).toEqual({
      blocks: Math.ceil(size / block),
      copied: nonZero.length,
      bytesRead: nonZero.reduce((n, b) => n + b.length, 0),
    });
    expect(nonZero.length).toBeLessThan(first.blocks);
    const again = await target.pullDisk({ ...request, runId: 'pull-2' });
    expect(again).toEqual({ blocks: first.blocks, copied: 0, bytesRead: 0 });
    // A replica disk larger than the source's (an SR that rounds sizes up, as XenServer's do): the
    // pull covers the source's bytes; a smaller one is refused before anything is written.
    const rounded = await target.ensureReplica({
      name: 'web-rounded',
      source: vm,
      disks: [{ sourceDiskId: vm.disks[0]!.id, size: size + 60 * KiB }],
    });
    const intoRounded = await target.pullDisk({ ...request, replica: rounded, runId: 'pull-r' });
    expect(intoRounded).toEqual(first);
    const roundedReader = await createFileDriver({ root: world.replicas }).openReader(rounded.disks[0]!);
    expect(Buffer.compare(Buffer.from(await roundedReader.read(0, size)), file)).toBe(0);
    await roundedReader.close();
    const small = await target.ensureReplica({
      name: 'web-small',
      source: vm,
      disks: [{ sourceDiskId: vm.disks[0]!.id, size: size - 4 * KiB }],
    });
    await expect(target.pullDisk({ ...request, replica: small, runId: 'pull-s' })).rejects.toMatchObject({
      code: 'E_INPUT',
      message: expect.stringMatching(/smaller than source disk/),
    });
    // bandwidthLimit paces the agent's reads from the source: the copied bytes cannot cross
    // faster than the cap (its bucket starts empty). A lower bound only: a loaded machine is slower.
    const paced = await target.ensureReplica({
      name: 'web-paced',
      source: vm,
      disks: [{ sourceDiskId: vm.disks[0]!.id, size }],
    });
    const limit = Math.ceil(first.bytesRead / 3); // 3 s at least
    const started = performance.now();
    const pacedResult = await target.pullDisk({ ...request, replica: paced, runId: 'pull-p', bandwidthLimit: limit });
    const seconds = (performance.now() - started) / 1000;
    expect(pacedResult).toEqual(first);
    expect(seconds).toBeGreaterThanOrEqual((first.bytesRead / limit) * 0.95);
    await expect(
      target.pullDisk({ ...request, replica: paced, runId: 'pull-z', bandwidthLimit: 0 }),
    ).rejects.toMatchObject({ message: expect.stringContaining('bandwidthLimit') });
    // A wrong key for the source agent: the pull fails with the source's refusal, nothing written.
    await expect(
      target.pullDisk({ ...request, from: { ...request.from, key: randomBytes(32) } }),
    ).rejects.toMatchObject({
      code: expect.stringMatching(/E_AUTH|E_TRANSPORT/),
    });
  });
});
