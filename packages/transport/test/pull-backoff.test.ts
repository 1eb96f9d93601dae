import { createServer, type Server } from 'node:net';
import { createFileDriver } from '@replikit/driver-file';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createAgent } from '../src/agent.js';
import { createWorld, PSK, type World } from './helpers/world.js';

let world: World;
beforeEach(async () => {
  world = await createWorld();
});
afterEach(async () => {
  await world.dispose();
});

describe('a pulling agent', () => {
  it('backs off from a peer that accepts each connection and closes it before the handshake', async () => {
    // Plain TCP: the dial itself succeeds (with TLS, the failed TLS handshake already backed off).
    // What a wrong port, a proxy with no backend or a crashed source's socket does: the TCP
    // connection succeeds, nothing else. The agent used to dial again at once, about 900 times
    // a second at a full core, logging a burst each second.
    const accepted: number[] = [];
    let enough!: () => void;
    const fifth = new Promise<void>((resolve) => {
      enough = resolve;
    });
    const peer: Server = createServer((socket) => {
      accepted.push(performance.now());
      socket.destroy();
      if (accepted.length === 5) enough();
    });
    await new Promise<void>((resolve) => peer.listen(0, '127.0.0.1', resolve));
    const { port } = peer.address() as { port: number };
    const agent = createAgent({
      target: createFileDriver({ root: world.replicas }),
      security: { kind: 'tcp', key: PSK },
    });
    try {
      agent.pullFrom({ host: '127.0.0.1', port });
      await fifth;
    } finally {
      await agent.stop();
      await new Promise((resolve) => peer.close(resolve));
    }
    // Lower bounds only (a timer never fires early; a loaded machine only widens the gaps): the
    // waits double from 50 ms.
    const gaps = accepted.slice(1).map((t, i) => t - accepted[i]!);
    for (const [i, gap] of gaps.entries()) expect(gap).toBeGreaterThanOrEqual(50 * 2 ** i - 2);
  });
});
