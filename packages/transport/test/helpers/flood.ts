import net from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Address } from '../../src/security.js';

/** What {@link startFlood} throws at an agent. */
export interface FloodOptions {
  /** The agent. */
  target: Address;
  /** Connections that connect and never send a byte (a silent or half-open TLS client). */
  silent: number;
  /**
   * Connections that trickle a TLS record header claiming 16 KiB, then one byte every
   * `trickleMs`, so that neither the TLS handshake nor a `hello` ever completes (slow-loris).
   */
  slowLoris: number;
  /** Milliseconds between two bytes of a slow-loris connection. */
  trickleMs: number;
  /** Local addresses the connections come from, in turn (127.0.1.x: many attackers on one host). */
  from: readonly string[];
  /**
   * Milliseconds after which a connection the agent dropped is opened again (the attacker tries
   * to hold its connections), until {@link Flood.stop}.
   */
  reopenMs: number;
}

/** A running flood. */
export interface Flood {
  /** Connections opened so far (first ones and reopened ones). */
  readonly opened: number;
  /** Connections the agent closed (every close counts; the flood never closes one itself before `stop`). */
  readonly closedByAgent: number;
  /** Connections open now. */
  readonly live: number;
  /** The longest a connection of this flood stayed open, in ms (measured from `connect`). */
  readonly longestLifeMs: number;
  /** Stops reopening; resolves once the agent has closed every connection still open. */
  stop(): Promise<void>;
  /** Destroys every connection at once and stops. */
  destroy(): void;
}

/** A TLS handshake record header that announces 16 KiB of body, which never comes in full. */
const RECORD_HEADER = Buffer.from([0x16, 0x03, 0x01, 0x40, 0x00]);

/** Opens the flood's connections (spread over `from`) and keeps them open as the options say. */
export function startFlood(options: FloodOptions): Flood {
  const sockets = new Set<net.Socket>();
  let opened = 0;
  let closedByAgent = 0;
  let longestLifeMs = 0;
  let stopping = false;
  let destroyed = false;
  let settle: (() => void) | undefined;
  let next = 0;

  const open = (slow: boolean) => {
    if (stopping) return;
    const localAddress = options.from[next++ % options.from.length]!;
    const socket = net.connect({ host: options.target.host, port: options.target.port, localAddress });
    opened++;
    sockets.add(socket);
    let since = 0;
    let trickle: NodeJS.Timeout | undefined;
    socket.on('connect', () => {
      since = performance.now();
      if (!slow) return;
      let sent = 0;
      trickle = setInterval(() => {
        socket.write(sent < RECORD_HEADER.length ? RECORD_HEADER.subarray(sent, sent + 1) : Buffer.from([sent & 0xff]));
        sent++;
      }, options.trickleMs);
    });
    socket.on('error', () => undefined);
    socket.resume();
    socket.on('close', () => {
      if (trickle) clearInterval(trickle);
      sockets.delete(socket);
      if (destroyed) return;
      closedByAgent++;
      if (since > 0) longestLifeMs = Math.max(longestLifeMs, performance.now() - since);
      if (!stopping) setTimeout(() => open(slow), options.reopenMs).unref();
      if (stopping && sockets.size === 0) settle?.();
    });
  };

  for (let i = 0; i < options.silent; i++) open(false);
  for (let i = 0; i < options.slowLoris; i++) open(true);

  return {
    get opened() {
      return opened;
    },
    get closedByAgent() {
      return closedByAgent;
    },
    get live() {
      return sockets.size;
    },
    get longestLifeMs() {
      return longestLifeMs;
    },
    stop() {
      stopping = true;
      if (sockets.size === 0) return Promise.resolve();
      return new Promise<void>((resolve) => {
        settle = resolve;
      });
    },
    destroy() {
      stopping = true;
      destroyed = true;
      for (const socket of sockets) socket.destroy();
      sockets.clear();
    },
  };
}
