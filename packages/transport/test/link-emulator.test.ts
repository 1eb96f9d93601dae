import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { afterEach, describe, expect, it } from 'vitest';
import { type LinkEmulator, startLinkEmulator } from '../src/testing/link-emulator.js';

const MiB = 1024 * 1024;
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A loopback server; `onSocket` decides what it does with each connection. */
async function serve(onSocket: (socket: net.Socket) => void): Promise<{ host: string; port: number }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    onSocket(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => server.close(resolve));
  });
  return { host: '127.0.0.1', port: (server.address() as net.AddressInfo).port };
}

async function through(emulator: LinkEmulator): Promise<net.Socket> {
  const socket = net.connect(emulator.address.port, emulator.address.host);
  socket.on('error', () => undefined);
  cleanups.push(() => {
    socket.destroy();
  });
  await once(socket, 'connect');
  return socket;
}

async function emulate(target: { host: string; port: number }, shape: Parameters<typeof startLinkEmulator>[1]) {
  const emulator = await startLinkEmulator(target, shape);
  cleanups.push(() => emulator.close());
  return emulator;
}

describe('link emulator', () => {
  it('a ping-pong through it takes at least the configured round-trip time', async () => {
    const echo = await serve((socket) => socket.pipe(socket));
    const emulator = await emulate(echo, { rttMs: 40, bitsPerSecond: 100e6 });
    const socket = await through(emulator);
    for (let i = 0; i < 5; i++) {
      const started = performance.now();
      socket.write(Buffer.from([i]));
      const [reply] = (await once(socket, 'data')) as [Buffer];
      const elapsed = performance.now() - started;
      expect(reply[0]).toBe(i);
      // Only a lower bound: a loaded machine may add any delay, never remove the emulated one.
      expect(elapsed).toBeGreaterThanOrEqual(40 - 1);
    }
  });

  it('delivers every byte intact and in order, both ways', async () => {
    const echo = await serve((socket) => socket.pipe(socket));
    const emulator = await emulate(echo, { rttMs: 10, bitsPerSecond: 1e9 });
    const socket = await through(emulator);
    const data = randomBytes(8 * MiB);
    const received: Buffer[] = [];
    let length = 0;
    const done = new Promise<void>((resolve) => {
      socket.on('data', (chunk: Buffer) => {
        received.push(chunk);
        length += chunk.length;
        if (length >= data.length) resolve();
      });
    });
    for (let at = 0; at < data.length; at += 256 * 1024) socket.write(data.subarray(at, at + 256 * 1024));
    await done;
    const digest = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');
    expect(length).toBe(data.length);
    expect(digest(Buffer.concat(received))).toBe(digest(data));
    expect(emulator.delivered).toEqual({ up: data.length, down: data.length });
  });

  it('holds at most its bandwidth-delay buffer when the receiver stops reading, and pushes back on the sender', async () => {
    // A receiver that never reads: the kernel's buffers fill, then the emulator's, then the sender's.
    const sink = await serve((socket) => socket.pause());
    const emulator = await emulate(sink, { rttMs: 20, bitsPerSecond: 1e9 });
    expect(emulator.bufferBytes).toBe(2_500_000);
    const socket = await through(emulator);
    const pushedBack = once(emulator, 'backpressure');
    let stalled = false;
    void pushedBack.then(() => {
      stalled = true;
    });
    const chunk = randomBytes(MiB);
    let written = 0;
    while (!stalled && written < 256 * MiB) {
      written += chunk.length;
      if (!socket.write(chunk)) await Promise.race([once(socket, 'drain'), pushedBack]);
    }
    const [direction] = await pushedBack;
    expect(direction).toBe('up');
    // One socket read (64 KiB at most) may land after the bound was reached.
    expect(emulator.maxHeldBytes).toBeLessThanOrEqual(emulator.bufferBytes + 64 * 1024);
    expect(written).toBeLessThan(256 * MiB);
  });
});
