import { EventEmitter } from 'node:events';
import net from 'node:net';
import { performance } from 'node:perf_hooks';

/** Where the emulator listens or forwards to. */
export interface LinkEndpoint {
  host: string;
  port: number;
}

/** The link a {@link startLinkEmulator} proxy imitates. */
export interface LinkShape {
  /** Round-trip time: each direction is delayed by half of it. */
  rttMs: number;
  /** Bandwidth of each direction, in bits per second. */
  bitsPerSecond: number;
  /**
   * Bytes each direction holds at most (in flight on the emulated wire plus queued before it);
   * past it the emulator stops reading from the sender, as a full router queue and TCP would.
   * @default the bandwidth-delay product, at least 256 KiB
   */
  bufferBytes?: number;
}

/** Events of a {@link LinkEmulator}. */
export interface LinkEmulatorEvents {
  /** A direction's buffer is full and its sender is no longer read. */
  backpressure: [direction: 'up' | 'down'];
}

/** A running link emulator: connect to `address` to reach the target through the emulated link. */
export interface LinkEmulator extends EventEmitter<LinkEmulatorEvents> {
  /** Where clients connect. */
  readonly address: LinkEndpoint;
  /** The buffer bound each direction keeps. */
  readonly bufferBytes: number;
  /** The most bytes one direction of one connection held at once. */
  readonly maxHeldBytes: number;
  /** Bytes delivered, summed over connections: client ─► target (`up`) and back (`down`). */
  readonly delivered: { up: number; down: number };
  /** Connections accepted so far. */
  readonly connections: number;
  /** Drops every connection and stops listening. */
  close(): Promise<void>;
}

interface Piece {
  data: Buffer;
  /** When the piece's last bit reaches the far end (ms, performance clock). */
  at: number;
}

/** The default buffer of a link: its bandwidth-delay product, at least 256 KiB. */
export function bandwidthDelayBytes(shape: Pick<LinkShape, 'rttMs' | 'bitsPerSecond'>): number {
  return Math.max(256 * 1024, Math.ceil((shape.bitsPerSecond / 8) * (shape.rttMs / 1000)));
}

/**
 * A loopback TCP proxy that imitates a long link (there is no `netem` on the test machines): each
 * direction is paced to `bitsPerSecond` (bytes leave one after another at that rate) and delayed
 * by `rttMs / 2`, and holds at most `bufferBytes`; when full it pauses the sending socket, so the
 * sender feels back-pressure instead of the emulator buffering without bound. For tests and
 * benchmarks only.
 *
 * @example
 * ```ts
 * const link = await startLinkEmulator(agentAddress, { rttMs: 150, bitsPerSecond: 100e6 });
 * const transport = createNetworkTransport({ address: link.address, security });
 * // ... run, then:
 * await link.close();
 * ```
 */
export async function startLinkEmulator(target: LinkEndpoint, shape: LinkShape): Promise<LinkEmulator> {
  if (!(shape.rttMs >= 0) || !(shape.bitsPerSecond > 0)) {
    throw new RangeError(`a link needs rttMs ≥ 0 and bitsPerSecond > 0, got ${shape.rttMs} and ${shape.bitsPerSecond}`);
  }
  const bufferBytes = shape.bufferBytes ?? bandwidthDelayBytes(shape);
  const bytesPerMs = shape.bitsPerSecond / 8 / 1000;
  const oneWay = shape.rttMs / 2;
  const sockets = new Set<net.Socket>();
  const emitter = new EventEmitter<LinkEmulatorEvents>();
  const delivered = { up: 0, down: 0 };
  let maxHeldBytes = 0;
  let connections = 0;

  /** One direction of one connection: a paced, delayed queue between two sockets. */
  const direction = (from: net.Socket, to: net.Socket, way: 'up' | 'down') => {
    const queue: Piece[] = [];
    let head = 0;
    let held = 0;
    /** When the emulated wire is free to start the next byte. */
    let wireFree = 0;
    let timer: NodeJS.Timeout | undefined;
    let paused = false;
    /** The sender ended: end the receiver once the queue is delivered. */
    let ended = false;

    const deliver = () => {
      timer = undefined;
      const now = performance.now();
      while (head < queue.length && queue[head]!.at <= now) {
        if (to.writableNeedDrain) return; // `drain` calls back
        const piece = queue[head]!;
        queue[head++] = undefined as never;
        held -= piece.data.length;
        delivered[way] += piece.data.length;
        to.write(piece.data);
      }
      if (head > 1024 && head * 2 > queue.length) {
        queue.splice(0, head);
        head = 0;
      }
      if (paused && held < bufferBytes) {
        paused = false;
        from.resume();
      }
      if (head < queue.length) schedule();
      else if (ended) to.end();
    };
    const schedule = () => {
      if (timer || head >= queue.length) return;
      timer = setTimeout(deliver, Math.max(0, queue[head]!.at - performance.now()));
    };

    from.on('data', (chunk: Buffer) => {
      const now = performance.now();
      wireFree = Math.max(wireFree, now) + chunk.length / bytesPerMs;
      queue.push({ data: chunk, at: wireFree + oneWay });
      held += chunk.length;
      if (held > maxHeldBytes) maxHeldBytes = held;
      if (held >= bufferBytes && !paused) {
        paused = true;
        from.pause();
        emitter.emit('backpressure', way);
      }
      schedule();
    });
    to.on('drain', () => {
      if (!timer) deliver();
    });
    from.on('end', () => {
      ended = true;
      if (head >= queue.length) to.end();
    });
    from.on('close', () => {
      sockets.delete(from);
      // A sender that ended cleanly still has its queued bytes delivered; a reset drops them.
      if (ended && head < queue.length) return;
      if (timer) clearTimeout(timer);
      to.destroy();
    });
    from.on('error', () => from.destroy());
  };

  const server = net.createServer((client) => {
    connections++;
    const upstream = net.connect(target.port, target.host);
    sockets.add(client);
    sockets.add(upstream);
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    direction(client, upstream, 'up');
    direction(upstream, client, 'down');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as net.AddressInfo;

  return Object.assign(emitter, {
    address: { host: '127.0.0.1', port },
    bufferBytes,
    get maxHeldBytes() {
      return maxHeldBytes;
    },
    delivered,
    get connections() {
      return connections;
    },
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  });
}
