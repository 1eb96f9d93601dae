import { randomBytes } from 'node:crypto';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import type { BlockChannel, DiskChannel, Transport } from '@replikit/core';
import { writeGuestDisk } from '@replikit/driver-file';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createNetworkTransport } from '../src/network-transport.js';
import type { Security } from '../src/security.js';
import {
  createMixedVm,
  createWorld,
  engineFor,
  jobFor,
  replicaMatches,
  startAgent,
  type World,
} from './helpers/world.js';

const KiB = 1024;
const BLOCK = 64 * KiB;
const TCP_KEY: Security = { kind: 'tcp', key: randomBytes(32) };
let world: World;

beforeEach(async () => {
  world = await createWorld();
});
afterEach(async () => {
  await world.dispose();
});

/**
 * Passes a transport through, except that the replica's block `index` is overwritten on disk
 * right after the engine read its digest: the delta the engine then sends for it has a base the
 * replica no longer holds (as after a write the engine did not see).
 */
function losingBase(transport: Transport, replicaFile: () => string, index: number): Transport {
  const wrapDisk = (disk: DiskChannel): DiskChannel =>
    new Proxy(disk, {
      get(target, key) {
        if (key === 'replicaDigests') {
          return async function* (from: number, options?: Parameters<DiskChannel['replicaDigests']>[1]) {
            for await (const entry of target.replicaDigests(from, options)) {
              if (entry.index === index) {
                const handle = await open(replicaFile(), 'r+');
                await handle.write(randomBytes(BLOCK), 0, BLOCK, index * BLOCK);
                await handle.close();
              }
              yield entry;
            }
          };
        }
        const value = Reflect.get(target, key, target);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
  return {
    name: transport.name,
    async open(spec, options) {
      const channel = await transport.open(spec, options);
      return new Proxy(channel, {
        get(target, key) {
          if (key === 'openDisk') {
            return async (...args: Parameters<BlockChannel['openDisk']>) => wrapDisk(await target.openDisk(...args));
          }
          const value = Reflect.get(target, key, target);
          return typeof value === 'function' ? value.bind(target) : value;
        },
      });
    },
  };
}

describe('a delta whose base the replica no longer holds', () => {
  it('is resent as a whole block: the run completes and the replica equals the source', async () => {
    const { agent, address } = await startAgent(world, TCP_KEY);
    try {
      const vm = 'lost-base';
      await createMixedVm(world, vm, 1024 * KiB);
      const plain = createNetworkTransport({
        address,
        security: TCP_KEY,
        reconnect: { attempts: 3, initialDelayMs: 5, maxDelayMs: 20 },
      });
      const first = await engineFor(world, () => plain).run(jobFor(world, vm));
      expect(first.state).toBe('completed');
      // Block 2 holds random data (the mixed VM's every fifth block is a hole): a 4 KiB write makes it a delta.
      await writeGuestDisk(world.vms, vm, 'd0', 2 * BLOCK + 8 * KiB, randomBytes(4 * KiB));
      const replicaFile = () => join(world.replicas, first.replica!.name, 'd0.raw');
      const engine = engineFor(world, () => losingBase(plain, replicaFile, 2));
      const record = await engine.run(jobFor(world, vm));
      expect(record.error?.message).toBeUndefined();
      expect(record.state).toBe('completed');
      expect(record.stats.blocksDelta).toBe(1);
      expect(await replicaMatches(world, record)).toBe(true);
    } finally {
      await agent.stop();
    }
  });
});
