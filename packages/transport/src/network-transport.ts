import type { Server } from 'node:net';
import type { Duplex } from 'node:stream';
import {
  type BlockChannel,
  InputError,
  type OperationOptions,
  type ReplikitError,
  type SessionSpec,
  type Transport,
  TransportError,
} from '@replikit/core';
import { TokenBucket } from '@replikit/core/internal';
import { codecByName, DEFAULT_CODEC } from './codecs.js';
import type { AnyHasherFactory } from './hasher.js';
import { type Address, checkSecurity, createSecureServer, dial, type Security } from './security.js';
import { type ReconnectPolicy, SourceSession } from './source-session.js';

/** Options shared by the push and pull transports. */
export interface SessionTuning {
  /** How the connection is secured (TLS with a key or pinned certificates, or plain TCP). */
  security: Security;
  /**
   * Codec of compressible blocks: `none`, `deflate` (fflate), `zlib-deflate`, `brotli`.
   * Incompressible blocks always go raw.
   * @default DEFAULT_CODEC
   */
  codec?: string;
  /**
   * Bytes of block payload in flight per disk before the target acks them durable, at most
   * (back-pressure, and the memory the window may hold); see `adaptiveWindow`.
   * @default 33554432 (32 MiB)
   */
  windowBytes?: number;
  /**
   * Size each disk's window to the link instead of to `windowBytes`: 4 × the bandwidth (acked
   * bytes per second) × the round trip (flush to ack) the session measures, from 4 MiB up to
   * `windowBytes`. False keeps every window at `windowBytes`.
   * @default true
   */
  adaptiveWindow?: boolean;
  /** How a dropped connection is retried. @default \{ attempts: 10, initialDelayMs: 50, maxDelayMs: 2000 \} */
  reconnect?: Partial<ReconnectPolicy>;
  /** Caps the bytes per second this side puts on the wire (frames included). */
  bandwidthLimit?: number;
  /** Computes block digests the caller did not send. @default node:crypto */
  hasher?: AnyHasherFactory;
}

/** Options of {@link createNetworkTransport}. */
export interface NetworkTransportOptions extends SessionTuning {
  /** The target agent's address. */
  address: Address;
}

interface Resolved {
  codec: ReturnType<typeof codecByName>;
  windowBytes: number;
  adaptiveWindow: boolean;
  reconnect: ReconnectPolicy;
  throttle: TokenBucket | undefined;
  key: Uint8Array | undefined;
}

/** Resolves tuning options and their defaults in one place. */
function resolveTuning(options: SessionTuning): Resolved {
  checkSecurity(options.security);
  const windowBytes = options.windowBytes ?? 32 * 1024 * 1024;
  if (!Number.isSafeInteger(windowBytes) || windowBytes < 64 * 1024) {
    throw new InputError(`windowBytes must be at least 64 KiB, got ${windowBytes}`);
  }
  return {
    codec: codecByName(options.codec ?? DEFAULT_CODEC),
    windowBytes,
    adaptiveWindow: options.adaptiveWindow ?? true,
    reconnect: { attempts: 10, initialDelayMs: 50, maxDelayMs: 2000, ...options.reconnect },
    throttle: options.bandwidthLimit ? new TokenBucket(options.bandwidthLimit) : undefined,
    key: options.security.kind === 'tcp' ? options.security.key : undefined,
  };
}

/**
 * Push: a {@link @replikit/core!Transport} that dials a target agent (`replikit-agent`) over TCP or TLS and
 * sends the blocks there. Named after its security: `tcp` or `tls`.
 *
 * @example
 * ```ts
 * const transport = createNetworkTransport({
 *   address: { host: '10.0.0.7', port: 7400 },
 *   security: { kind: 'tls', psk: { identity: 'site-a', key } },
 * });
 * const engine = new ReplicationEngine({ stateStore, transport: () => transport });
 * ```
 */
export function createNetworkTransport(options: NetworkTransportOptions): Transport {
  const tuning = resolveTuning(options);
  const peer = `agent ${options.address.host}:${options.address.port}`;
  return {
    name: options.security.kind,
    async open(spec: SessionSpec, openOptions?: OperationOptions): Promise<BlockChannel> {
      const session = new SourceSession(spec, {
        connect: (signal) => dial(options.address, options.security, { signal }),
        dialer: true,
        peer,
        ...tuning,
        ...(options.hasher ? { hasher: options.hasher } : {}),
      });
      await session.start(openOptions?.signal);
      return session;
    },
  };
}

/** Options of {@link createPullTransport}. */
export interface PullTransportOptions extends SessionTuning {
  /** Where this side waits for the target agent (`replikit-agent --pull-from`). */
  listen: Address;
  /**
   * How long a session waits for the agent to connect.
   * @default 30000
   */
  connectTimeoutMs?: number;
}

/** A pull transport: it listens, and the target agent connects to it. */
export interface PullTransport extends Transport {
  /** Starts listening; resolves with the bound address (port 0 picks a free one). */
  listen(): Promise<Address>;
  /** Stops listening and drops idle agent connections. */
  close(): Promise<void>;
  /** The last connection refused (bad key, unpinned certificate), if any. */
  readonly lastRefusal: ReplikitError | undefined;
  /**
   * The next connection of the agent (already connected, or the next to come), for another use
   * than a block session (the remote target driver's control connection). Rejects after
   * `connectTimeoutMs` without one.
   */
  accept(signal: AbortSignal): Promise<Duplex>;
}

/**
 * Pull: the source side listens and the target agent connects to it (a target behind a
 * firewall needs no inbound port). Once connected the frames are those of push: the source
 * still drives the session, and each of the target's acks grants the source room to send more.
 */
export function createPullTransport(options: PullTransportOptions): PullTransport {
  const tuning = resolveTuning(options);
  const ready: Array<{ socket: Duplex; peer: string }> = [];
  const waiting: Array<(link: { socket: Duplex; peer: string }) => void> = [];
  let lastRefusal: ReplikitError | undefined;
  let server: Server | undefined;
  const timeoutMs = options.connectTimeoutMs ?? 30_000;

  const take = (signal: AbortSignal): Promise<Duplex> =>
    new Promise((resolve, reject) => {
      while (ready.length > 0) {
        const link = ready.shift()!;
        if (!link.socket.destroyed) {
          resolve(link.socket);
          return;
        }
      }
      const timer = setTimeout(() => {
        waiting.splice(waiting.indexOf(deliver), 1);
        reject(
          new TransportError(
            `no target agent connected to ${options.listen.host}:${options.listen.port} within ${timeoutMs} ms; start \`replikit-agent --pull-from\` there${lastRefusal ? ` (last refusal: ${lastRefusal.message})` : ''}`,
          ),
        );
      }, timeoutMs);
      const deliver = (link: { socket: Duplex; peer: string }) => {
        clearTimeout(timer);
        resolve(link.socket);
      };
      signal.addEventListener(
        'abort',
        () => {
          clearTimeout(timer);
          const at = waiting.indexOf(deliver);
          if (at >= 0) waiting.splice(at, 1);
          reject(new TransportError('the session stopped waiting for the agent'));
        },
        { once: true },
      );
      waiting.push(deliver);
    });

  return {
    name: options.security.kind,
    get lastRefusal() {
      return lastRefusal;
    },
    accept(signal) {
      if (!server)
        return Promise.reject(new TransportError('the pull transport is not listening; call listen() first'));
      return take(signal);
    },
    async listen() {
      server = createSecureServer(options.security, {
        onConnection(socket, peer) {
          const deliver = waiting.shift();
          if (deliver) deliver({ socket, peer });
          else if (ready.length < 8) ready.push({ socket, peer });
          else socket.destroy();
        },
        onRefused(error) {
          lastRefusal = error;
        },
      });
      const bound = server;
      await new Promise<void>((resolve, reject) => {
        bound.once('error', reject);
        bound.listen(options.listen.port, options.listen.host, () => {
          bound.off('error', reject);
          resolve();
        });
      });
      const address = bound.address();
      if (!address || typeof address === 'string') throw new TransportError('the pull listener has no address');
      return { host: address.address, port: address.port };
    },
    async close() {
      for (const link of ready.splice(0)) link.socket.destroy();
      const bound = server;
      server = undefined;
      if (bound) await new Promise<void>((resolve) => bound.close(() => resolve()));
    },
    async open(spec: SessionSpec, openOptions?: OperationOptions): Promise<BlockChannel> {
      if (!server) throw new TransportError('the pull transport is not listening; call listen() first');
      const session = new SourceSession(spec, {
        connect: take,
        dialer: false,
        peer: `pulling agent on ${options.listen.host}:${options.listen.port}`,
        ...tuning,
        ...(options.hasher ? { hasher: options.hasher } : {}),
      });
      await session.start(openOptions?.signal);
      return session;
    },
  };
}
