import { randomFillSync } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DriverRegistry, defineDriver, FileStateStore, ReplicationEngine } from '@replikit/core';
import { compareBytes, readWholeDisk } from '@replikit/core/testing';
import { createFileDriver, fileDriver } from '@replikit/driver-file';
import { adminCmdlet } from '@replikit/hyperv-sim';
import { localTransport } from '@replikit/transport';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createHyperVDriver, HYPERV_KIND_CAPABILITIES, hypervDriverOptionsSchema } from '../src/index.js';
import { type SimHost, startSimHost } from './helpers/sim-host.js';

const KiB = 1024;
const MiB = 2 ** 20;

/** Bytes of the union of `ranges` rounded out to whole blocks of `block` bytes (clipped to `size`). */
function roundedToBlocks(ranges: readonly [number, number][], block: number, size: number): number {
  const blocks = new Set<number>();
  for (const [offset, length] of ranges) {
    for (let b = Math.floor(offset / block); b <= Math.floor((offset + length - 1) / block); b++) blocks.add(b);
  }
  return [...blocks].reduce((sum, b) => sum + Math.min(block, size - b * block), 0);
}

// The SIMULATED host counts every byte read from the checkpoint chain's files (the frozen .avhdx
// and its parent), headers, BATs and sector bitmaps included; the driver only opens files through
// it. After a full run and scattered small guest writes, the tracked run may read what opening
// the chain costs plus the changed ranges rounded out to the engine's blocks, nothing more. The
// VHDX block size differs from the engine's in both directions, and writes are 4 KiB into
// otherwise untouched VHDX blocks, so the checkpoint's file holds partially present blocks (read
// through their sector bitmaps) and the rest of each engine block comes from the parent.
describe('an RCT incremental reads no more than the changed ranges rounded to the engine block', {
  timeout: 300_000,
}, () => {
  let sim: SimHost;
  let dir: string;
  beforeEach(async () => {
    sim = await startSimHost();
    dir = await mkdtemp(join(tmpdir(), 'rk-hyperv-rct-read-'));
  });
  afterEach(async () => {
    await sim.close();
    await rm(dir, { recursive: true, force: true });
  });

  it.each([
    { engineBlock: 64 * KiB, vhdxBlock: 32 * MiB },
    { engineBlock: 1 * MiB, vhdxBlock: 1 * MiB },
    { engineBlock: 4 * KiB, vhdxBlock: 2 * MiB },
  ])('engine blocks of $engineBlock bytes over VHDX blocks of $vhdxBlock bytes', async ({ engineBlock, vhdxBlock }) => {
    const size = 32 * MiB;
    const vm = `rct-${engineBlock}`;
    await sim.makeVM(vm, [size], { block: vhdxBlock });
    // The first run copies what the guest wrote (6 MiB).
    await sim.host.guestWrites(
      vm,
      0,
      [0, 12, 24].map((m) => ({ offset: m * MiB, data: randomFillSync(new Uint8Array(2 * MiB)) })),
    );
    const drivers = new DriverRegistry()
      .register(
        defineDriver({
          kind: 'hyperv',
          capabilities: HYPERV_KIND_CAPABILITIES,
          options: hypervDriverOptionsSchema,
          create: (options) => createHyperVDriver(options, { openImage: (path) => sim.host.openDisk(path) }),
        }),
      )
      .register(fileDriver);
    const engine = new ReplicationEngine({
      stateStore: new FileStateStore(join(dir, 'state')),
      drivers,
      transport: localTransport(),
    });
    const job = {
      name: 'rct-read',
      source: { driver: 'hyperv', vm, pwsh: sim.host.pwsh },
      target: { driver: 'file', root: join(dir, 'replicas'), reflink: false },
      method: 'qhybrid',
      blockSize: engineBlock,
    };
    const target = createFileDriver({ root: join(dir, 'replicas') });
    const total = () => [...sim.host.bytesRead().values()].reduce((sum, n) => sum + n, 0);
    try {
      const first = await engine.run(job);
      expect(first.outcome, JSON.stringify(first.error)).toBe('completed');

      // 4 KiB at 24 scattered places: half before a checkpoint the user takes (a standard one,
      // kept), half after it, so the checkpoint the next run reads freezes a differencing file
      // with partially present blocks over its parent, not the base alone.
      const writes: [number, number][] = [];
      for (let i = 0; i < 24; i++) writes.push([Math.floor((i * size) / 24) + ((i * 7) % 13) * 4 * KiB + 512, 4 * KiB]);
      const guest = (list: [number, number][]) =>
        sim.host.guestWrites(
          vm,
          0,
          list.map(([offset, length]) => ({ offset, data: randomFillSync(new Uint8Array(length)) })),
        );
      await guest(writes.filter((_, i) => i % 2 === 0));
      await adminCmdlet(sim.host.root, 'Checkpoint-VM', { Name: vm, SnapshotName: 'kept by the user' });
      await guest(writes.filter((_, i) => i % 2 === 1));
      const before = new Map(sim.host.bytesRead());
      const second = await engine.run(job);
      expect(second.outcome, JSON.stringify(second.error)).toBe('completed');
      expect(second.disks.map((d) => d.mode)).toEqual(['tracked']);
      const grown = [...sim.host.bytesRead()].map(([path, n]) => [path, n - (before.get(path) ?? 0)] as const);
      const read = grown.reduce((sum, [, n]) => sum + n, 0);
      const differencing = grown.filter(([path, n]) => n > 0 && path.endsWith('.avhdx')).length;
      expect(differencing).toBeGreaterThanOrEqual(1);

      // What merely opening the checkpoint's chain costs, measured by the host the same way.
      const frozen = (await sim.host.state()).snapshots!.at(-1)!.frozen[0]!;
      const beforeOpen = total();
      await (await sim.host.openDisk(frozen)).close();
      const opening = total() - beforeOpen;

      // The simulated host reports the guest's writes as they were (byte ranges, merged). Beyond
      // opening the chain, the run may read those ranges rounded out to its blocks, and the
      // sector bitmaps of the differencing files' blocks it reads: one bit per 512-byte sector,
      // at most `size / 4096` bytes per differencing file.
      const allowed = roundedToBlocks(writes, engineBlock, size) + differencing * (size / 4096);
      expect(read - opening).toBeGreaterThanOrEqual(writes.length * 4 * KiB);
      expect(read - opening).toBeLessThanOrEqual(allowed);

      // And the replica holds what the checkpoint froze.
      const reader = await sim.driver();
      const replica = (await target.listVMs())[0]!;
      expect(
        compareBytes(
          await readWholeDisk(target, replica.disks[0]!),
          await readWholeDisk(reader, second.snapshot!.disks[0]!),
        ),
      ).toBe('equal');
    } finally {
      await engine.close();
      await target.close();
    }
  });
});
