import { randomBytes } from 'node:crypto';
import { createNodeHasher } from '@replikit/core/internal';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createAgent } from '../src/agent.js';
import { createNetworkTransport, createPullTransport } from '../src/network-transport.js';
import type { Security } from '../src/security.js';
import { makeCertificate } from './helpers/certificates.js';
import {
  createMixedVm,
  createWorld,
  engineFor,
  jobFor,
  replicaMatches,
  scribble,
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

describe('push sessions', () => {
  it('replicates over TLS-PSK, full then incremental, and the replica equals the source', async () => {
    const { agent, address, events } = await startAgent(world, TLS_PSK);
    try {
      await createMixedVm(world, 'web', 4 * MiB);
      const transport = createNetworkTransport({ address, security: TLS_PSK, windowBytes: 256 * 1024 });
      const engine = engineFor(world, () => transport);
      const first = await engine.run(jobFor(world, 'web'));
      expect(first.state).toBe('completed');
      expect(await replicaMatches(world, first)).toBe(true);
      // Text blocks compress, random ones go raw: fewer bytes on the wire than the data.
      expect(first.stats.bytesSent).toBeLessThan(first.stats.bytesWritten);
      await scribble(world, 'web', 4 * MiB, 5);
      const second = await engine.run(jobFor(world, 'web'));
      expect(await replicaMatches(world, second)).toBe(true);
      expect(second.stats.bytesSent).toBeLessThan(first.stats.bytesSent / 4);
      expect(events.filter((e) => e.type === 'session' && e.committed)).toHaveLength(2);
    } finally {
      await agent.stop();
    }
  });

  it('replicates over plain TCP with a key, and over TLS with pinned certificates', async () => {
    const key = randomBytes(32);
    const tcp: Security = { kind: 'tcp', key };
    const a = makeCertificate('agent');
    const s = makeCertificate('source');
    const agentTls: Security = { kind: 'tls', certificate: { cert: a.cert, key: a.key, trust: [s.fingerprint] } };
    const sourceTls: Security = { kind: 'tls', certificate: { cert: s.cert, key: s.key, trust: [a.fingerprint] } };
    for (const [name, agentSide, sourceSide] of [
      ['tcp', tcp, tcp],
      ['certs', agentTls, sourceTls],
    ] as const) {
      const { agent, address } = await startAgent(world, agentSide);
      try {
        await createMixedVm(world, name, 2 * MiB);
        const transport = createNetworkTransport({ address, security: sourceSide, codec: 'deflate' });
        const record = await engineFor(world, () => transport, `state-${name}`).run(jobFor(world, name));
        expect(await replicaMatches(world, record)).toBe(true);
      } finally {
        await agent.stop();
      }
    }
  });

  it("serves a verified diff: the target's digests equal the source's for every block", async () => {
    const { agent, address } = await startAgent(world, TLS_PSK);
    try {
      await createMixedVm(world, 'db', 3 * MiB);
      const transport = createNetworkTransport({ address, security: TLS_PSK });
      const record = await engineFor(world, () => transport).run(jobFor(world, 'db'));
      const channel = await transport.open({
        runId: 'digests',
        replica: record.replica!,
        blockSize: record.blockSize,
        digest: 'sha256',
      });
      const disk = await channel.openDisk(record.replica!.disks[0]!);
      const got = [];
      for await (const digest of disk.replicaDigests(5)) got.push(digest);
      await disk.close();
      await channel.close();
      expect(got.map((d) => d.index)).toEqual(Array.from({ length: 48 - 5 }, (_, i) => i + 5));
      // Block 5 of the mixed VM is a hole (every fifth block), block 6 random data.
      expect(got[0]!.digest).toBeNull();
      const { createFileDriver } = await import('@replikit/driver-file');
      const source = createFileDriver({ root: world.vms });
      const reader = await source.openReader(record.snapshot!.disks[0]!);
      const [want] = await createNodeHasher().hash([await reader.read(6 * 65536, 65536)]);
      await reader.close();
      await source.close();
      expect(Buffer.from(got[1]!.digest!).equals(want!)).toBe(true);
    } finally {
      await agent.stop();
    }
  });
});

describe('pull sessions', () => {
  it('the target agent connects to the waiting source side and the replica equals the source', async () => {
    const pull = createPullTransport({ listen: { host: '127.0.0.1', port: 0 }, security: TLS_PSK });
    const address = await pull.listen();
    const { createFileDriver } = await import('@replikit/driver-file');
    const agent = createAgent({ target: createFileDriver({ root: world.replicas }), security: TLS_PSK });
    agent.pullFrom(address);
    try {
      await createMixedVm(world, 'pulled', 2 * MiB);
      const engine = engineFor(world, () => pull);
      const first = await engine.run(jobFor(world, 'pulled'));
      expect(await replicaMatches(world, first)).toBe(true);
      await scribble(world, 'pulled', 2 * MiB, 3);
      const second = await engine.run(jobFor(world, 'pulled'));
      expect(await replicaMatches(world, second)).toBe(true);
    } finally {
      await agent.stop();
      await pull.close();
    }
  });
});
