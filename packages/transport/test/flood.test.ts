import net from 'node:net';
import { createFileDriver } from '@replikit/driver-file';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type AgentEvent, createAgent } from '../src/agent.js';
import { createNetworkTransport } from '../src/network-transport.js';
import { encodeMessage } from '../src/protocol/messages.js';
import { startFlood } from './helpers/flood.js';
import {
  createMixedVm,
  createWorld,
  engineFor,
  jobFor,
  replicaMatches,
  TLS_PSK,
  type World,
  waitFor,
} from './helpers/world.js';

const MiB = 1024 * 1024;
let world: World;

beforeEach(async () => {
  world = await createWorld();
});
afterEach(async () => {
  await world.dispose();
});

/** Twenty attacker addresses on this host (Linux routes all of 127.0.0.0/8 to loopback). */
const ATTACKERS = Array.from({ length: 20 }, (_, i) => `127.0.1.${i + 1}`);

describe('an agent under a flood of connections that never authenticate', () => {
  it('serves a real run to completion, drops the attackers, and logs bursts, not connections', async () => {
    const events: AgentEvent[] = [];
    const lines: string[] = [];
    const agent = createAgent({
      target: createFileDriver({ root: world.replicas, confine: true }),
      security: TLS_PSK,
      handshakeTimeoutMs: 1000,
      maxUnauthenticated: 64,
      maxUnauthenticatedPerAddress: 16,
      onEvent: (event) => events.push(event),
      log: (line) => lines.push(line),
    });
    const address = await agent.listen({ host: '127.0.0.1', port: 0 });
    // 300 silent TLS clients and 50 slow-loris ones, each reopened 300 ms after the agent drops it.
    const flood = startFlood({
      target: address,
      silent: 300,
      slowLoris: 50,
      trickleMs: 100,
      from: ATTACKERS,
      reopenMs: 300,
    });
    try {
      // The attackers fill the slots before the run starts: the cap drops the oldest ones.
      await waitFor(events, (e) => e.type === 'dropped' && e.reason === 'cap');
      await createMixedVm(world, 'vm', 8 * MiB);
      const transport = createNetworkTransport({ address, security: TLS_PSK });
      const record = await engineFor(world, () => transport).run(jobFor(world, 'vm'));
      expect(record.state).toBe('completed');
      expect(await replicaMatches(world, record)).toBe(true);
      // Every attacker still connected is dropped by the agent, at the handshake deadline.
      const stopped = flood.stop();
      await waitFor(events, (e) => e.type === 'dropped' && e.reason === 'deadline');
      await stopped;
      const dropped = events.filter((e) => e.type === 'dropped').length;
      expect(dropped).toBeGreaterThanOrEqual(350);
      expect(flood.closedByAgent).toBe(flood.connected);
      // One line per burst: far fewer lines than dropped connections.
      const dropLines = lines.filter((line) => line.startsWith('dropped'));
      expect(dropLines.length).toBeLessThan(dropped / 10);
      expect(dropLines.some((line) => /more connections within 1 s, from 127\.0\.1\.\d+ \(\d+\)/.test(line))).toBe(
        true,
      );
      expect(events.flatMap((e) => (e.type === 'refused' ? [`${e.error.code} ${e.error.message}`] : []))).toEqual([]);
    } finally {
      flood.destroy();
      await agent.stop();
    }
  });

  it('a plain TCP agent drops a client that trickles its hello at the handshake deadline, though it is never idle', async () => {
    const events: AgentEvent[] = [];
    const agent = createAgent({
      target: createFileDriver({ root: world.replicas, confine: true }),
      security: { kind: 'tcp' },
      idleTimeoutMs: 60_000,
      handshakeTimeoutMs: 300,
      onEvent: (event) => events.push(event),
    });
    const address = await agent.listen({ host: '127.0.0.1', port: 0 });
    const socket = net.connect({ host: address.host, port: address.port });
    // A genuine hello, one byte every 20 ms: never idle, and the frame never completes in time.
    const hello = Buffer.concat(
      encodeMessage({
        type: 'hello',
        protocol: 'replikit-blocks',
        versions: [1, 1],
        role: 'source',
        nonce: 'ab'.repeat(32),
        codecs: ['none'],
      }),
    );
    let sent = 0;
    const trickle = setInterval(() => {
      if (sent < hello.length - 1) socket.write(hello.subarray(sent, ++sent));
    }, 20);
    try {
      socket.on('error', () => undefined);
      socket.resume();
      await new Promise((resolve) => socket.once('close', resolve));
      expect(events).toContainEqual(expect.objectContaining({ type: 'dropped', reason: 'deadline' }));
    } finally {
      clearInterval(trickle);
      socket.destroy();
      await agent.stop();
    }
  });
});
