import { randomBytes } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createNetworkTransport } from '../src/network-transport.js';
import type { Security } from '../src/security.js';
import { createMixedVm, createWorld, engineFor, jobFor, startAgent, type World } from './helpers/world.js';

const BLOCK = 64 * 1024;
const TCP_KEY: Security = { kind: 'tcp', key: randomBytes(32) };
let world: World;

beforeEach(async () => {
  world = await createWorld();
});
afterEach(async () => {
  await world.dispose();
});

describe('a failure every reconnect meets again', () => {
  it('ends the session after the reconnect attempts instead of reconnecting without end', async () => {
    const { agent, address } = await startAgent(world, TCP_KEY);
    try {
      const transport = createNetworkTransport({
        address,
        security: TCP_KEY,
        reconnect: { attempts: 3, initialDelayMs: 1, maxDelayMs: 5 },
      });
      await createMixedVm(world, 'vm', 4 * BLOCK);
      const first = await engineFor(world, () => transport).run(jobFor(world, 'vm'));
      const replica = first.replica!;
      const channel = await transport.open({ runId: 'run', replica, blockSize: BLOCK, digest: 'sha256' });
      const stream = await channel.openDisk(replica.disks[0]!);
      // A digest that does not match the data: the agent refuses the block as damaged at every resend.
      await stream.send({ kind: 'data', index: 0, data: randomBytes(BLOCK), digest: new Uint8Array(32) });
      const error = await stream.checkpoint().then(
        () => undefined,
        (e: unknown) => e as { code: string; message: string },
      );
      expect(error?.code).toBe('E_TRANSPORT');
      expect(error?.message).toMatch(/3 times in a row/);
    } finally {
      await agent.stop();
    }
  });
});
