import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createNetworkTransport } from '../src/network-transport.js';
import { createWorld, startAgent, TLS_PSK, type World, waitFor } from './helpers/world.js';

let world: World;
beforeEach(async () => {
  world = await createWorld();
});
afterEach(async () => {
  await world.dispose();
});

describe("the agent's log", () => {
  it('a peer cannot forge log lines: control characters in what it sends are escaped', async () => {
    const { agent, address, lines } = await startAgent(world, TLS_PSK);
    try {
      const transport = createNetworkTransport({ address, security: TLS_PSK });
      const forged = 'r1\n2026-12-06T00:00:00.000Z session x run admin from 10.0.0.1:1: 0 bytes written, committed';
      const channel = await transport.open({
        runId: forged,
        replica: { id: 'none', name: 'none', disks: [], created: false },
        blockSize: 65536,
        digest: 'sha256',
      });
      await channel.close();
      const line = await waitFor(lines, (l) => l.startsWith('session '));
      expect(line).toContain('run r1\\n2026-12-06T00:00:00.000Z session x run admin');
      expect(lines.every((l) => !/[\n\r]/.test(l))).toBe(true);
    } finally {
      await agent.stop();
    }
  });
});
