import { createHash, randomBytes } from 'node:crypto';
import type { DiskWriter, Hypervisor, Replica } from '@replikit/core';
import { describe, expect, it } from 'vitest';
import { createAgent } from '../src/agent.js';
import { createNetworkTransport } from '../src/network-transport.js';
import { TLS_PSK } from './helpers/world.js';

const BLOCK = 64 * 1024;
const RATE = 20_000_000;

/** A target whose replica disk only records when bytes arrive. */
function countingSink(arrivals: Array<[number, number]>): Hypervisor {
  return {
    async openWriter(_replica: Replica, disk: { size: number }): Promise<DiskWriter> {
      return {
        size: disk.size,
        async write(_offset: number, data: Uint8Array) {
          arrivals.push([performance.now(), data.length]);
        },
        async writeZeroes() {},
        async flush() {},
        async close() {},
      };
    },
  } as unknown as Hypervisor;
}

describe('bandwidth limit', () => {
  it('a 20 MB/s cap is never exceeded over 10 s, with no burst and no stall on the way', {
    timeout: 40_000,
  }, async () => {
    const arrivals: Array<[number, number]> = [];
    const agent = createAgent({ target: countingSink(arrivals), security: TLS_PSK });
    const address = await agent.listen({ host: '127.0.0.1', port: 0 });
    try {
      const transport = createNetworkTransport({ address, security: TLS_PSK, codec: 'none', bandwidthLimit: RATE });
      const blocks = Array.from({ length: 32 }, () => {
        const data = randomBytes(BLOCK);
        return { data, digest: createHash('sha256').update(data).digest() };
      });
      const count = Math.ceil((RATE * 10) / BLOCK);
      const disk = { id: 'd0', vmId: 'r', size: count * BLOCK };
      const replica = { id: 'r', name: 'r', disks: [disk], created: true } as unknown as Replica;
      const channel = await transport.open({ runId: 'throttle', replica, blockSize: BLOCK, digest: 'sha256' });
      const stream = await channel.openDisk(disk);
      const start = performance.now();
      for (let index = 0; index < count; index++) {
        const block = blocks[index % blocks.length]!;
        await stream.send({ kind: 'data', index, data: block.data, digest: block.digest });
      }
      await stream.close();
      await channel.close();
      const seconds = (performance.now() - start) / 1000;
      const wire = stream.bytesSent;
      const rate = wire / seconds;
      // The cap is an upper bound whatever the machine does: 10 s of data never arrives sooner.
      // How close to the cap a run gets depends on how busy the machine is (two cores shared with
      // the rest of the suite), so the lower bounds only catch a throttle that stalls.
      expect(seconds).toBeGreaterThan(9);
      expect(rate).toBeLessThan(RATE * 1.1);
      expect(rate).toBeGreaterThan(RATE * 0.25);
      // Slices of 2 s at the receiving end: no burst above the cap, and no slice starved (a looser
      // bound: the receiver shares this process, so a busy machine can shift arrivals between slices).
      const first = arrivals[0]![0];
      const slices = new Map<number, number>();
      for (const [at, bytes] of arrivals) {
        const slice = Math.floor((at - first) / 2000);
        slices.set(slice, (slices.get(slice) ?? 0) + bytes);
      }
      const whole = [...slices.entries()].filter(([slice]) => slice < Math.floor(seconds / 2));
      if (process.env.REPLIKIT_PRINT_RATE)
        console.log(
          `throttle: ${(rate / 1e6).toFixed(2)} MB/s over ${seconds.toFixed(2)} s; slices ${whole.map(([, b]) => (b / 2e6).toFixed(2)).join(', ')} MB/s`,
        );
      for (const [, bytes] of whole.slice(0, 4)) {
        expect(bytes / 2).toBeGreaterThan(RATE * 0.1);
        expect(bytes / 2).toBeLessThan(RATE * 1.25);
      }
    } finally {
      await agent.stop();
    }
  });
});
