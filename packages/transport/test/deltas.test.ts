import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { writeGuestDisk } from '@replikit/driver-file';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { availableCodecs } from '../src/codecs.js';
import { FrameConnection } from '../src/connection.js';
import { handshake } from '../src/handshake.js';
import { createNetworkTransport } from '../src/network-transport.js';
import type { Security } from '../src/security.js';
import { startFaultProxy } from './helpers/fault-proxy.js';
import {
  completedIntact,
  createMixedVm,
  createWorld,
  engineFor,
  jobFor,
  replicaMatches,
  startAgent,
  TLS_PSK,
  type World,
} from './helpers/world.js';

const KiB = 1024;
const BLOCK = 64 * KiB;
const TCP_KEY: Security = { kind: 'tcp', key: randomBytes(32) };
const fast = { attempts: 6, initialDelayMs: 5, maxDelayMs: 50 };
let world: World;

beforeEach(async () => {
  world = await createWorld();
});
afterEach(async () => {
  await world.dispose();
});

/** A 4 KiB guest write into each of `blocks` data blocks of the mixed VM (every fifth block is a hole). */
async function smallWrites(vm: string, blocks: number[]): Promise<void> {
  for (const block of blocks) await writeGuestDisk(world.vms, vm, 'd0', block * BLOCK + 8 * KiB, randomBytes(4 * KiB));
}

/** A 1 MiB mixed VM replicated once, then changed by 4 KiB writes into ten of its data blocks. */
async function replicatedThenChanged(engine: ReturnType<typeof engineFor>, vm: string): Promise<void> {
  await createMixedVm(world, vm, 1024 * KiB);
  await engine.run(jobFor(world, vm));
  await smallWrites(vm, [1, 2, 3, 6, 7, 8, 11, 12, 13, 14]);
}

describe('deltas over the network', () => {
  it('a block changed by a 4 KiB write travels as a delta over TCP and TLS, and the replica equals the source', async () => {
    for (const security of [TCP_KEY, TLS_PSK]) {
      const { agent, address } = await startAgent(world, security);
      try {
        const vm = `delta-${security.kind}`;
        await createMixedVm(world, vm, 1024 * KiB);
        const transport = createNetworkTransport({ address, security });
        const engine = engineFor(world, () => transport);
        const full = await engine.run(jobFor(world, vm));
        expect(await replicaMatches(world, full)).toBe(true);
        const changed = [1, 2, 6, 8, 13];
        await smallWrites(vm, changed);
        const record = await engine.run(jobFor(world, vm));
        expect(record.state).toBe('completed');
        expect(record.stats.blocksChanged).toBe(changed.length);
        expect(record.stats.blocksDelta).toBe(changed.length);
        // Each delta carries about its 4 KiB, not the 64 KiB block (framing and digests included).
        expect(record.stats.bytesSent).toBeLessThan(changed.length * 6 * KiB);
        expect(await replicaMatches(world, record)).toBe(true);
      } finally {
        await agent.stop();
      }
    }
  });

  it('the channel sends a block whole when its delta is not worth it (over half the block), and the replica equals the source', async () => {
    const { agent, address } = await startAgent(world, TCP_KEY);
    try {
      const vm = 'delta-not-worth-it';
      await createMixedVm(world, vm, 1024 * KiB);
      const transport = createNetworkTransport({ address, security: TCP_KEY });
      const engine = engineFor(world, () => transport);
      await engine.run(jobFor(world, vm));
      await smallWrites(vm, [1, 2]);
      // Two blocks rewritten from end to end: their deltas would be as large as the blocks.
      for (const block of [6, 7]) await writeGuestDisk(world.vms, vm, 'd0', block * BLOCK, randomBytes(BLOCK));
      const record = await engine.run(jobFor(world, vm));
      expect(record.state).toBe('completed');
      expect(record.stats.blocksChanged).toBe(4);
      expect(record.stats.blocksDelta).toBe(2);
      expect(await replicaMatches(world, record)).toBe(true);
    } finally {
      await agent.stop();
    }
  });

  it('runs of deltas cut at random points complete by resuming, and every replica equals its source', async () => {
    const { agent, address } = await startAgent(world, TCP_KEY);
    const proxy = await startFaultProxy(address);
    try {
      const transport = createNetworkTransport({
        address: proxy.address,
        security: TCP_KEY,
        windowBytes: 64 * KiB,
        reconnect: fast,
      });
      const engine = engineFor(world, () => transport);
      let resumed = 0;
      for (let run = 0; run < 12; run++) {
        const vm = `cut${run}`;
        await replicatedThenChanged(engine, vm);
        // Past the handshake and the session's opening, somewhere among the delta frames.
        proxy.faults.push({ direction: 'up', cutAfter: 600 + Math.floor(Math.random() * 40 * KiB) });
        const before = proxy.connections;
        const record = await engine.run(jobFor(world, vm));
        proxy.faults.length = 0;
        expect(record.state).toBe('completed');
        expect(record.stats.blocksDelta).toBeGreaterThan(0);
        expect(await replicaMatches(world, record), `run ${run}`).toBe(true);
        if (proxy.connections - before > 1) resumed++;
      }
      expect(resumed).toBeGreaterThanOrEqual(8);
    } finally {
      await proxy.close();
      await agent.stop();
    }
  });

  it('a flipped byte in a delta frame is caught: resent, or a clear failure; never a wrong replica', async () => {
    const { agent, address, events } = await startAgent(world, TCP_KEY);
    const proxy = await startFaultProxy(address);
    try {
      const transport = createNetworkTransport({ address: proxy.address, security: TCP_KEY, reconnect: fast });
      const engine = engineFor(world, () => transport);
      let completed = 0;
      for (let run = 0; run < 8; run++) {
        const vm = `flip${run}`;
        await replicatedThenChanged(engine, vm);
        // The deltas are ~4.2 KiB each, after about 1 KiB of handshake and session frames.
        proxy.faults.push({ direction: 'up', flipAt: 1200 + Math.floor(Math.random() * 38 * KiB) });
        if (await completedIntact(world, () => engine.run(jobFor(world, vm)))) completed++;
        proxy.faults.length = 0;
      }
      expect(completed).toBeGreaterThanOrEqual(5);
      const caught = events.filter((e) => e.type === 'session' && e.error && /damaged|malformed/.test(e.error.message));
      expect(caught.length).toBeGreaterThanOrEqual(4);
    } finally {
      await proxy.close();
      await agent.stop();
    }
  });

  it('a source sends deltas only to an agent whose hello lists the feature (an older agent gets whole blocks)', async () => {
    for (const features of [[], ['delta']]) {
      // A minimal target that answers the handshake, the session and one open-disk, as an agent
      // of a given age would.
      const sockets: net.Socket[] = [];
      const server = net.createServer(async (socket) => {
        sockets.push(socket);
        const conn = new FrameConnection(socket, 'test source');
        try {
          await handshake(conn, { role: 'target', dialer: false, codecs: availableCodecs(), features });
          const session = await conn.expect('session');
          conn.send({ type: 'session-ok', sessionId: session.sessionId });
          const open = await conn.expect('open-disk');
          conn.send({ type: 'disk-opened', stream: open.stream, blockCount: 16 });
        } catch {
          conn.destroy();
        }
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      const { port } = server.address() as net.AddressInfo;
      try {
        const transport = createNetworkTransport({
          address: { host: '127.0.0.1', port },
          security: { kind: 'tcp' },
          reconnect: { attempts: 1, initialDelayMs: 1, maxDelayMs: 1 },
        });
        const disk = { id: 'd0', vmId: 'r', size: 16 * BLOCK };
        const replica = { id: 'r', name: 'r', disks: [disk], created: true } as never;
        const channel = await transport.open({ runId: 'run', replica, blockSize: BLOCK, digest: 'sha256' });
        const stream = await channel.openDisk(disk);
        expect(typeof stream.sendDelta, `features ${JSON.stringify(features)}`).toBe(
          features.length > 0 ? 'function' : 'undefined',
        );
      } finally {
        for (const socket of sockets) socket.destroy();
        await new Promise((resolve) => server.close(resolve));
      }
    }
  });
});
