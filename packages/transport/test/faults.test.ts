import { randomBytes } from 'node:crypto';
import { createFileDriver } from '@replikit/driver-file';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type AgentEvent, createAgent } from '../src/agent.js';
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
  waitFor,
} from './helpers/world.js';

const KiB = 1024;
let world: World;

beforeEach(async () => {
  world = await createWorld();
});
afterEach(async () => {
  await world.dispose();
});

const TCP_KEY: Security = { kind: 'tcp', key: randomBytes(32) };
const fast = { attempts: 6, initialDelayMs: 5, maxDelayMs: 50 };

describe('dropped connections', () => {
  it('50 runs cut at random points each complete by resuming, and every replica equals its source', async () => {
    const tcp = await startAgent(world, TCP_KEY);
    const tls = await startAgent(world, TLS_PSK);
    const proxies = { tcp: await startFaultProxy(tcp.address), tls: await startFaultProxy(tls.address) };
    try {
      const transports = {
        tcp: createNetworkTransport({
          address: proxies.tcp.address,
          security: TCP_KEY,
          windowBytes: 64 * KiB,
          reconnect: fast,
        }),
        tls: createNetworkTransport({
          address: proxies.tls.address,
          security: TLS_PSK,
          windowBytes: 64 * KiB,
          reconnect: fast,
        }),
      };
      let resumed = 0;
      for (let run = 0; run < 50; run++) {
        const kind = run % 5 === 0 ? 'tls' : 'tcp';
        const proxy = proxies[kind];
        const vm = `vm${run}`;
        await createMixedVm(world, vm, 256 * KiB, 16 * KiB);
        // Cut the first connection (and sometimes the next) at a random byte, either way.
        for (let cuts = run % 3 === 0 ? 2 : 1; cuts > 0; cuts--) {
          const up = Math.random() < 0.7;
          proxy.faults.push({
            direction: up ? 'up' : 'down',
            cutAfter: Math.floor(Math.random() * (up ? 90 * KiB : 500)),
          });
        }
        const before = proxy.connections;
        const record = await engineFor(world, () => transports[kind]).run(jobFor(world, vm, { blockSize: 16 * KiB }));
        proxy.faults.length = 0;
        expect(record.state).toBe('completed');
        expect(await replicaMatches(world, record), `run ${run}`).toBe(true);
        if (proxy.connections - before > 1) resumed++;
      }
      // Nearly every cut lands inside a session, which then resumed on a new connection.
      expect(resumed).toBeGreaterThanOrEqual(40);
    } finally {
      await proxies.tcp.close();
      await proxies.tls.close();
      await tcp.agent.stop();
      await tls.agent.stop();
    }
  });

  it('a run that reconnects many times adds no listener it does not remove (no MaxListenersExceededWarning)', async () => {
    const warnings: Error[] = [];
    const onWarning = (warning: Error) => warnings.push(warning);
    process.on('warning', onWarning);
    const { agent, address } = await startAgent(world, TCP_KEY);
    const proxy = await startFaultProxy(address);
    try {
      await createMixedVm(world, 'vm', 2 * 1024 * KiB, 16 * KiB);
      // Twenty connections in a row are cut after some blocks: twenty reconnects in one run.
      for (let i = 0; i < 20; i++) proxy.faults.push({ direction: 'up', cutAfter: 40 * KiB });
      const transport = createNetworkTransport({
        address: proxy.address,
        security: TCP_KEY,
        windowBytes: 64 * KiB,
        reconnect: { attempts: 30, initialDelayMs: 1, maxDelayMs: 5 },
      });
      // The run has a signal of its own, as under the CLI: the reconnects must not pile on it either.
      const record = await engineFor(world, () => transport).run(jobFor(world, 'vm', { blockSize: 16 * KiB }), {
        signal: new AbortController().signal,
      });
      expect(record.state).toBe('completed');
      expect(proxy.connections).toBeGreaterThan(20);
      expect(await replicaMatches(world, record)).toBe(true);
      // A warning is emitted on the next turn of the event loop after the listener is added.
      await new Promise<void>((resolve) => setImmediate(resolve));
      expect(warnings.filter((w) => w.name === 'MaxListenersExceededWarning').map((w) => w.message)).toEqual([]);
    } finally {
      process.off('warning', onWarning);
      await proxy.close();
      await agent.stop();
    }
  });

  it('a flipped byte is caught (frame check or block digest): resent, or a clear failure; never a wrong replica', async () => {
    const { agent, address, events } = await startAgent(world, TCP_KEY);
    const proxy = await startFaultProxy(address);
    try {
      const transport = createNetworkTransport({ address: proxy.address, security: TCP_KEY, reconnect: fast });
      let completed = 0;
      for (let run = 0; run < 12; run++) {
        const vm = `flip${run}`;
        await createMixedVm(world, vm, 512 * KiB);
        // Past the handshake: somewhere in the block frames.
        proxy.faults.push({ direction: 'up', flipAt: 1500 + Math.floor(Math.random() * 200 * KiB) });
        if (await completedIntact(world, () => engineFor(world, () => transport).run(jobFor(world, vm)))) completed++;
        proxy.faults.length = 0;
      }
      expect(completed).toBeGreaterThanOrEqual(8);
      const caught = events.filter((e) => e.type === 'session' && e.error && /damaged/.test(e.error.message));
      expect(caught.length).toBeGreaterThanOrEqual(8);
    } finally {
      await proxy.close();
      await agent.stop();
    }
  });

  it('an agent stopped mid-session acks what it wrote; the run resumes on the restarted agent', async () => {
    const first = await startAgent(world, TLS_PSK);
    await createMixedVm(world, 'stop', 2048 * KiB);
    const transport = createNetworkTransport({
      address: first.address,
      security: TLS_PSK,
      windowBytes: 64 * KiB,
      bandwidthLimit: 2 * 1024 * KiB,
      reconnect: { attempts: 20, initialDelayMs: 20, maxDelayMs: 100 },
    });
    const running = engineFor(world, () => transport).run(jobFor(world, 'stop'));
    await waitFor(first.events, (e) => e.type === 'session-start');
    await first.agent.stop();
    const ended = first.events.find((e): e is Extract<AgentEvent, { type: 'session' }> => e.type === 'session');
    expect(ended?.committed).toBe(false);
    expect(ended?.error?.message).toMatch(/shutting down/);
    const second = createAgent({ target: createFileDriver({ root: world.replicas }), security: TLS_PSK });
    await second.listen(first.address);
    try {
      const record = await running;
      expect(await replicaMatches(world, record)).toBe(true);
    } finally {
      await second.stop();
    }
  });
});
