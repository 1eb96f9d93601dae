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
   * Connections that trickle, one byte every `trickleMs`, a TLS record announcing 16 KiB that
   * starts like a ClientHello, so that neither the TLS handshake nor a `hello` ever completes
   * (slow-loris).
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
  /** Connections established so far (first ones and reopened ones). */
  readonly connected: number;
  /** Established connections the agent closed (the flood never closes one itself before `stop`). */
  readonly closedByAgent: number;
  /** Connection attempts that failed or were still waiting for the agent's accept at `stop`. */
  readonly neverConnected: number;
  /** Connections open now. */
  readonly live: number;
  /**
   * The longest a connection of this flood stayed open before the agent closed it, in ms (from
   * `connect`, so time in the agent's accept queue counts), among those closed before `stop`.
   */
  readonly longestLifeMs: number;
  /**
   * Stops reopening and gives up the attempts the agent has not accepted yet (they wait in its
   * listen queue); resolves once the agent has closed every established connection. A silent
   * connection sends one byte (the first of a TLS record) first: one the kernel completed while
   * the agent's accept queue was full, and that the agent never saw, looks established from this
   * side until it sends something; the byte makes the agent's kernel reset it.
   */
  stop(): Promise<void>;
  /** Destroys every connection at once and stops. */
  destroy(): void;
}

/** A TLS handshake record header that announces 16 KiB of body, which never comes in full. */
const RECORD_HEADER = Buffer.from([0x16, 0x03, 0x01, 0x40, 0x00]);
/**
 * What a slow-loris connection trickles: the record header, then the start of a ClientHello that
 * fills the record (type 1, 16,380 bytes, TLS 1.2), so that the TLS layer waits for the rest
 * instead of refusing a malformed message.
 */
const SLOW_PREFIX = Buffer.concat([RECORD_HEADER, Buffer.from([0x01, 0x00, 0x3f, 0xfc, 0x03, 0x03])]);

/** Opens the flood's connections (spread over `from`) and keeps them open as the options say. */
export function startFlood(options: FloodOptions): Flood {
  const sockets = new Set<net.Socket>();
  /** The slow-loris sockets (they send already: no probe byte for them). */
  const slowOnes = new WeakSet<net.Socket>();
  let connected = 0;
  let closedByAgent = 0;
  let neverConnected = 0;
  let longestLifeMs = 0;
  let stopping = false;
  let destroyed = false;
  let settle: (() => void) | undefined;
  let next = 0;

  const open = (slow: boolean) => {
    if (stopping) return;
    const localAddress = options.from[next++ % options.from.length]!;
    const socket = net.connect({ host: options.target.host, port: options.target.port, localAddress });
    sockets.add(socket);
    if (slow) slowOnes.add(socket);
    let since = 0;
    let trickle: NodeJS.Timeout | undefined;
    socket.on('connect', () => {
      connected++;
      since = performance.now();
      if (!slow) return;
      let sent = 0;
      trickle = setInterval(() => {
        socket.write(sent < SLOW_PREFIX.length ? SLOW_PREFIX.subarray(sent, sent + 1) : Buffer.from([sent & 0xff]));
        sent++;
      }, options.trickleMs);
    });
    socket.on('error', () => undefined);
    socket.resume();
    socket.on('close', () => {
      if (trickle) clearInterval(trickle);
      sockets.delete(socket);
      if (destroyed) return;
      if (since > 0) {
        closedByAgent++;
        // After `stop`, a connection the agent never accepted also closes (on the probe byte).
        if (!stopping) longestLifeMs = Math.max(longestLifeMs, performance.now() - since);
      } else neverConnected++;
      if (!stopping) setTimeout(() => open(slow), options.reopenMs).unref();
      if (stopping && sockets.size === 0) settle?.();
    });
  };

  for (let i = 0; i < options.silent; i++) open(false);
  for (let i = 0; i < options.slowLoris; i++) open(true);

  return {
    get connected() {
      return connected;
    },
    get closedByAgent() {
      return closedByAgent;
    },
    get neverConnected() {
      return neverConnected;
    },
    get live() {
      return sockets.size;
    },
    get longestLifeMs() {
      return longestLifeMs;
    },
    stop() {
      stopping = true;
      for (const socket of sockets) {
        if (socket.connecting) socket.destroy();
        else if (!slowOnes.has(socket)) socket.write(RECORD_HEADER.subarray(0, 1));
      }
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
