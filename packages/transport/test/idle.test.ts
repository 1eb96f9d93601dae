import type { BlockChannel, DiskChannel, ReplikitError, Transport } from '@replikit/core';
import { createFileDriver } from '@replikit/driver-file';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { AgentEvent } from '../src/agent.js';
import { createAgent } from '../src/agent.js';
import { FrameConnection } from '../src/connection.js';
import { createNetworkTransport } from '../src/network-transport.js';
import { dial } from '../src/security.js';
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

async function idleAgent(idleTimeoutMs: number) {
  const events: AgentEvent[] = [];
  const lines: string[] = [];
  const agent = createAgent({
    target: createFileDriver({ root: world.replicas }),
    security: TLS_PSK,
    idleTimeoutMs,
    onEvent: (event) => events.push(event),
    log: (line) => lines.push(line),
  });
  const address = await agent.listen({ host: '127.0.0.1', port: 0 });
  return { agent, address, events, lines };
}

describe('idle connections', () => {
  it('a client that connects and says nothing is told why and closed after the idle timeout', async () => {
    const { agent, address, lines } = await idleAgent(150);
    try {
      const conn = new FrameConnection(await dial(address, TLS_PSK), 'agent');
      const error = (await conn.next().then(
        () => undefined,
        (e: unknown) => e,
      )) as ReplikitError;
      expect(error.code).toBe('E_TRANSPORT');
      expect(error.message).toMatch(/sent nothing for 150 ms: closed the idle connection/);
      expect(error.details.retry).toBe(true);
      await waitFor(lines, (line) => /idle/.test(line));
    } finally {
      await agent.stop();
    }
  });

  it('a source that pauses longer than the timeout is disconnected, reconnects and completes', async () => {
    const { agent, address, events } = await idleAgent(150);
    try {
      await createMixedVm(world, 'slow', 2 * MiB);
      const inner = createNetworkTransport({ address, security: TLS_PSK });
      // After a few blocks the source side stops sending until the agent has closed the
      // connection as idle (the event, not a sleep), then goes on.
      let paused = false;
      const pausing: Transport = {
        name: inner.name,
        async open(spec, options) {
          const channel: BlockChannel = await inner.open(spec, options);
          return {
            close: () => channel.close(),
            async openDisk(disk, diskOptions) {
              const stream: DiskChannel = await channel.openDisk(disk, diskOptions);
              let sent = 0;
              return Object.assign(Object.create(stream) as DiskChannel, {
                async send(op: Parameters<DiskChannel['send']>[0], sendOptions?: Parameters<DiskChannel['send']>[1]) {
                  await stream.send(op, sendOptions);
                  if (++sent === 8 && !paused) {
                    paused = true;
                    await stream.checkpoint();
                    await waitFor(events, (e) => e.type === 'session' && e.error?.details.idle === true);
                  }
                },
                checkpoint: (o?: Parameters<DiskChannel['checkpoint']>[0]) => stream.checkpoint(o),
                close: (o?: Parameters<DiskChannel['close']>[0]) => stream.close(o),
                replicaDigests: (from: number, o?: Parameters<DiskChannel['replicaDigests']>[1]) =>
                  stream.replicaDigests(from, o),
              });
            },
          };
        },
      };
      const record = await engineFor(world, () => pausing).run(jobFor(world, 'slow'));
      expect(paused).toBe(true);
      expect(record.state).toBe('completed');
      expect(await replicaMatches(world, record)).toBe(true);
      const sessions = events.filter((e) => e.type === 'session');
      expect(sessions.some((e) => e.type === 'session' && e.committed)).toBe(true);
    } finally {
      await agent.stop();
    }
  });

  it('refuses a negative idle timeout', () => {
    expect(() =>
      createAgent({ target: createFileDriver({ root: world.replicas }), security: TLS_PSK, idleTimeoutMs: -1 }),
    ).toThrow(/idleTimeoutMs/);
  });
});
