import { createNodeHasher } from '@replikit/core/internal';
import { createFileDriver } from '@replikit/driver-file';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createNetworkTransport } from '../src/network-transport.js';
import {
  createMixedVm,
  createWorld,
  engineFor,
  jobFor,
  replicaMatches,
  startAgent,
  TLS_PSK,
  type World,
} from './helpers/world.js';

const MiB = 1024 * 1024;
let world: World;

beforeEach(async () => {
  world = await createWorld();
});
afterEach(async () => {
  await world.dispose();
});

describe('writes another session left pending', () => {
  it("are never committed by the owner's next run, which says the replica changed", async () => {
    const { agent, address } = await startAgent(world, TLS_PSK);
    try {
      await createMixedVm(world, 'web', 4 * MiB);
      const transport = createNetworkTransport({ address, security: TLS_PSK });
      const engine = engineFor(world, () => transport);
      const first = await engine.run(jobFor(world, 'web'));
      expect(await replicaMatches(world, first)).toBe(true);

      // Another peer of the agent writes the replica's first block and goes away without a run's commit.
      const peer = createNetworkTransport({ address, security: TLS_PSK });
      const blockSize = first.blockSize;
      const session = await peer.open({ runId: 'peer-run', replica: first.replica!, blockSize, digest: 'sha256' });
      const disk = await session.openDisk(first.replica!.disks[0]!);
      const data = new Uint8Array(blockSize).fill(0x66);
      const [digest] = await createNodeHasher('sha256').hash([data]);
      await disk.send({ kind: 'data', index: 0, data, digest: digest! });
      await disk.checkpoint();
      await disk.close();
      await session.close();

      const second = await engine.run(jobFor(world, 'web'));
      expect(second.state).toBe('completed');
      expect(await replicaMatches(world, second), "the replica holds the peer's bytes").toBe(true);
      // Not a clean run over foreign bytes: the run says the replica had changed.
      expect(second.warnings.map((w) => w.code)).toContain('W_REPLICA_MODIFIED');
    } finally {
      await agent.stop();
    }
  });

  it('are refused while a run holds the replica', async () => {
    const { agent, address } = await startAgent(world, TLS_PSK);
    try {
      await createMixedVm(world, 'db', 2 * MiB);
      const transport = createNetworkTransport({ address, security: TLS_PSK });
      const first = await engineFor(world, () => transport).run(jobFor(world, 'db'));
      const target = createFileDriver({ root: world.replicas });
      const owner = { runId: 'owner-run', host: 'here', pid: process.pid, startedAt: new Date().toISOString() };
      expect((await target.claimReplica(first.replica!, owner)).runId).toBe('owner-run');
      const peer = createNetworkTransport({ address, security: TLS_PSK });
      const blockSize = first.blockSize;
      const session = await peer.open({ runId: 'peer-run', replica: first.replica!, blockSize, digest: 'sha256' });
      try {
        await expect(session.openDisk(first.replica!.disks[0]!)).rejects.toMatchObject({ code: 'E_CONFLICT' });
      } finally {
        await session.close().catch(() => undefined);
      }
      await target.releaseReplica(first.replica!, 'owner-run');
    } finally {
      await agent.stop();
    }
  });
});
