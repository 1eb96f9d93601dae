import type { Server, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import {
  type BlockHasher,
  type Hypervisor,
  InputError,
  isReplikitError,
  type ReplikitError,
  TransportError,
} from '@replikit/core';
import { createNodeHasher } from '@replikit/core/internal';
import { abortableDelay } from './abortable-delay.js';
import {
  Admission,
  DEFAULT_HANDSHAKE_TIMEOUT_MS,
  DEFAULT_MAX_UNAUTHENTICATED,
  DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS,
  type DropReason,
} from './admission.js';
import { bindError } from './bind-error.js';
import { BurstLog } from './burst-log.js';
import { coalescingHypervisor } from './coalescing-writer.js';
import { availableCodecs } from './codecs.js';
import { FrameConnection } from './connection.js';
import { handshake } from './handshake.js';
import type { AnyHasherFactory } from './hasher.js';
import { HostFileRoot } from './host-files.js';
import { ArenaPool } from './protocol/block-arena.js';
import {
  FEATURE_DELTA,
  FEATURE_HOST_FILES,
  FEATURE_PULL_DISK,
  FEATURE_READ_DIGESTS_HASHER,
  FEATURE_SOURCE,
  FEATURE_TARGET,
} from './protocol/constants.js';
import type { Message } from './protocol/messages.js';
import { type Address, checkSecurity, createSecureServer, dial, type Security } from './security.js';
import { serveTargetControl, type TargetControlResult } from './target-control-server.js';
import { serveTargetSession, type TargetSessionResult } from './target-session.js';
import { BlockTarget } from './wire/block-target.js';

/** How long an agent waits for a connection's next frame by default: 5 minutes. */
export const DEFAULT_IDLE_TIMEOUT_MS = 300_000;

/** What an agent reports, one event per session or refusal. */
export type AgentEvent =
  | { type: 'session-start'; peer: string; sessionId: string; runId: string }
  | ({ type: 'session'; peer: string } & TargetSessionResult)
  /** A target-control connection (replica, hold, restore points… asked by the engine) ended. */
  | ({ type: 'control'; peer: string } & TargetControlResult)
  | { type: 'refused'; peer: string; error: ReplikitError }
  /** A connection that had not authenticated was dropped: past the handshake deadline, or over a cap. */
  | { type: 'dropped'; peer: string; reason: DropReason };

/** Options of {@link createAgent}. */
export interface AgentOptions {
  /** The hypervisor whose replicas the agent writes (the file driver beside the disks). */
  target: Hypervisor;
  /** How connections are secured; must match the source side's. */
  security: Security;
  /**
   * Hashers by algorithm for digest checks (the dedup package's pool knows `xxh128`). One hasher
   * per algorithm is made and kept until {@link Agent.stop}, which closes it.
   * @default node:crypto on the calling thread
   */
  hasher?: AnyHasherFactory;
  /** One line per session or refusal. @default nothing */
  log?: (line: string) => void;
  /**
   * Milliseconds the agent waits for a connection's next frame (in the handshake or during a
   * session) before it closes the connection as idle; `0` never does. A source side that is
   * alive reconnects and resumes from its last ack.
   * @default 300000 (5 minutes)
   */
  idleTimeoutMs?: number;
  /**
   * Milliseconds a pushed connection has, from accept, to complete the TLS handshake and `hello`
   * (with the key proof on plain TCP); past it the connection is dropped, however slowly bytes
   * trickle in. `0`: no deadline (not advised on a network).
   * @default 10000 (10 s)
   */
  handshakeTimeoutMs?: number;
  /**
   * Pushed connections that have not completed their handshake, at most; one more drops the
   * oldest waiting one (a legitimate source's handshake is the newest while it waits, so it gets
   * through a flood; see the agent's admission control).
   * @default 128
   */
  maxUnauthenticated?: number;
  /**
   * Like {@link AgentOptions.maxUnauthenticated}, per remote address: one more from that address
   * drops its own oldest waiting connection.
   * @default 16
   */
  maxUnauthenticatedPerAddress?: number;
  /** Structured events (tests, metrics). */
  onEvent?: (event: AgentEvent) => void;
  /**
   * Also serve reads and block digests of the driver's disks to authenticated peers (the
   * `source` feature: a delegate appliance on the source side). Any peer holding the key can then
   * read every disk the driver lists, so it is off unless asked for.
   * @default false
   */
  serveReads?: boolean;
  /**
   * Also serve the images and state files under this folder to a `hyperv` driver that controls
   * its host through PowerShell remoting (the `host-files` feature): reads of a checkpoint's VHDX
   * chain, the driver's RCT reference-point files, and, for a replica on this host, the replica
   * folder's files (create, write at an offset, rename, remove, fsync). Every path is confined to
   * the folder; links are never followed.
   * @default undefined (not served)
   */
  hostFilesRoot?: string;
}

/** A running `replikit-agent`: serves target sessions, pushed to it or pulled by it. */
export interface Agent {
  /** Listens for source sides that push (push mode). Resolves with the bound address. */
  listen(address: Address): Promise<Address>;
  /** Connects to a source side that waits for it (pull mode), again after each session. */
  pullFrom(address: Address): void;
  /**
   * Stops: no new connections; each running session finishes the block it is applying, makes
   * everything durable, acks it, and ends with a retryable error so its source can resume later.
   */
  stop(): Promise<void>;
  /** Sessions running now. */
  readonly activeSessions: number;
}

function describe(result: TargetSessionResult, peer: string): string {
  const outcome = result.committed ? 'committed' : `ended: ${result.error?.code ?? ''} ${result.error?.message ?? ''}`;
  return `session ${result.sessionId ?? '-'} run ${result.runId ?? '-'} from ${peer}: ${result.bytesWritten} bytes written, ${outcome.trim()}`;
}

/** `line` with its control characters escaped (`\n` → `\\n`, others as `\\u00XX`). */
function printable(line: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are exactly what is escaped
  return line.replace(/[\u0000-\u001f\u007f]/g, (c) =>
    c === '\n'
      ? '\\n'
      : c === '\r'
        ? '\\r'
        : c === '\t'
          ? '\\t'
          : `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

/** The remote address of a peer named `address:port`. */
function addressOf(peer: string): string {
  const colon = peer.lastIndexOf(':');
  return colon > 0 ? peer.slice(0, colon) : peer;
}

function describeMs(ms: number): string {
  return ms >= 1000 ? `${Math.round(ms / 100) / 10} s` : `${ms} ms`;
}

function wholeAtLeast(value: number, least: number, what: string): number {
  if (!Number.isSafeInteger(value) || value < least) {
    throw new InputError(`${what} must be a whole number >= ${least}, got ${value}`);
  }
  return value;
}

/** The agent's time and connection limits with their defaults, checked. */
function resolveLimits(options: AgentOptions) {
  return {
    idleTimeoutMs: wholeAtLeast(options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS, 0, 'idleTimeoutMs (milliseconds)'),
    handshakeTimeoutMs: wholeAtLeast(
      options.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS,
      0,
      'handshakeTimeoutMs (milliseconds)',
    ),
    maxUnauthenticated: wholeAtLeast(
      options.maxUnauthenticated ?? DEFAULT_MAX_UNAUTHENTICATED,
      1,
      'maxUnauthenticated',
    ),
    maxUnauthenticatedPerAddress: wholeAtLeast(
      options.maxUnauthenticatedPerAddress ?? DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS,
      1,
      'maxUnauthenticatedPerAddress',
    ),
  };
}

/**
 * Creates a delegate agent for a target hypervisor.
 *
 * @example
 * ```ts
 * const agent = createAgent({
 *   target: createFileDriver({ root: '/srv/replicas' }),
 *   security: { kind: 'tls', psk: { identity: 'site-a', key } },
 *   log: console.log,
 * });
 * await agent.listen({ host: '0.0.0.0', port: 7400 });
 * process.once('SIGTERM', () => void agent.stop());
 * ```
 */
export function createAgent(options: AgentOptions): Agent {
  checkSecurity(options.security);
  const { idleTimeoutMs, handshakeTimeoutMs, maxUnauthenticated, maxUnauthenticatedPerAddress } =
    resolveLimits(options);
  const makeHasher = options.hasher ?? createNodeHasher;
  // One hasher per algorithm, made on first use (a pool may take a moment) and closed at stop.
  const ready = new Map<string, BlockHasher>();
  const making = new Map<string, Promise<BlockHasher>>();
  const hasherFor = (algorithm: string): Promise<BlockHasher> => {
    let hasher = making.get(algorithm);
    if (!hasher) {
      hasher = Promise.resolve(makeHasher(algorithm)).then((made) => {
        ready.set(algorithm, made);
        return made;
      });
      hasher.catch(() => making.delete(algorithm));
      making.set(algorithm, hasher);
    }
    return hasher;
  };
  // Sessions resolve their hasher before they open a disk, so the target finds it ready.
  const target = new BlockTarget(
    coalescingHypervisor(options.target),
    (algorithm) => ready.get(algorithm) ?? createNodeHasher(algorithm),
  );
  const key = options.security.kind === 'tcp' ? options.security.key : undefined;
  const sink = options.log ?? (() => undefined);
  // Lines carry what peers sent (run ids, messages): escaped, a peer cannot forge a line.
  const log = (line: string) => sink(printable(line));
  // Drops, refusals and connections that vanish before they authenticate come in floods.
  const burst = new BurstLog(log);
  const admission = new Admission({
    handshakeTimeoutMs,
    maxUnauthenticated,
    maxUnauthenticatedPerAddress,
    onDrop: (peer, address, reason) => {
      const why =
        reason === 'deadline'
          ? `no handshake within ${describeMs(handshakeTimeoutMs)}`
          : 'over the cap of connections that have not authenticated';
      burst.add(`dropped (${why})`, address, `dropped connection from ${peer}: ${why}`);
      options.onEvent?.({ type: 'dropped', peer, reason });
    },
  });
  const hostFiles = options.hostFilesRoot === undefined ? undefined : new HostFileRoot(options.hostFilesRoot);
  const stopping = new AbortController();
  const servers: Server[] = [];
  const connections = new Set<FrameConnection>();
  const work = new Set<Promise<void>>();
  const bySession = new Map<string, { conn: FrameConnection; done: Promise<void> }>();
  const arenas = new ArenaPool();
  let active = 0;

  const refused = (error: ReplikitError, peer: string) => {
    if (admission.droppedPeer(peer)) return;
    burst.add(`refused (${error.code})`, addressOf(peer), `refused ${peer}: ${error.code} ${error.message}`);
    options.onEvent?.({ type: 'refused', peer, error });
  };
  const leftEarly = (peer: string, what: string) => {
    if (!admission.droppedPeer(peer)) burst.add(what, addressOf(peer), `${what}: ${peer}`);
  };

  /**
   * Serves one connection. `onControl` is called when it turns out to be a target-control
   * connection (its first frame is a `request`): such a connection stays open for as long as the
   * engine keeps its driver, so a pulling agent dials again for the block sessions meanwhile.
   */
  const serve = async (
    socket: Duplex,
    peer: string,
    dialer: boolean,
    hooks: { onControl?: () => void; onHandshake?: () => void; quietEarlyEnd?: boolean } = {},
  ): Promise<void> => {
    const conn = new FrameConnection(socket, `source ${peer}`);
    conn.setIdleTimeout(idleTimeoutMs);
    connections.add(conn);
    let finished!: () => void;
    const done = new Promise<void>((resolve) => {
      finished = resolve;
    });
    try {
      try {
        await handshake(conn, {
          role: 'target',
          dialer,
          codecs: availableCodecs(),
          features: [
            FEATURE_DELTA,
            FEATURE_TARGET,
            FEATURE_PULL_DISK,
            ...(options.serveReads ? [FEATURE_SOURCE] : []),
            // readDigests computes the block hasher's algorithms only with a hasher besides node:crypto's.
            ...(options.serveReads && options.hasher ? [FEATURE_READ_DIGESTS_HASHER] : []),
            ...(hostFiles ? [FEATURE_HOST_FILES] : []),
          ],
          key,
        });
        if (!dialer) admission.passed(peer);
        hooks.onHandshake?.();
      } catch (error) {
        const refusal = isReplikitError(error, 'E_AUTH') || (isReplikitError(error) && error.details.protocol === true);
        if (stopping.signal.aborted) return;
        if (refusal) refused(error as ReplikitError, peer);
        else if (conn.error?.details.idle === true) {
          if (!admission.droppedPeer(peer)) {
            burst.add(
              'closed idle connections',
              addressOf(peer),
              `closed idle connection from ${peer}: ${conn.error.message}`,
            );
          }
        } else if (!hooks.quietEarlyEnd) leftEarly(peer, 'connection dropped during the handshake');
        return;
      }
      let first: Message;
      try {
        first = await conn.next();
      } catch {
        // A malformed first frame is refused like one after it; a connection that just ended is not.
        if (!stopping.signal.aborted && conn.error?.details.protocol === true) refused(conn.error, peer);
        return;
      }
      if (first.type === 'request') {
        hooks.onControl?.();
        const control = await serveTargetControl(
          conn,
          options.target,
          first,
          stopping.signal,
          options.serveReads,
          options.hasher ? hasherFor : undefined,
          hostFiles,
        );
        if (control.error && !stopping.signal.aborted) {
          log(`control connection from ${peer} ended: ${control.error.code} ${control.error.message}`);
        }
        options.onEvent?.({ type: 'control', peer, ...control });
        return;
      }
      let sessionId: string | undefined;
      const result = await serveTargetSession(conn, target, {
        first,
        stopping: stopping.signal,
        hasher: hasherFor,
        arenas,
        onSession: async (id, spec) => {
          sessionId = id;
          active++;
          options.onEvent?.({ type: 'session-start', peer, sessionId: id, runId: spec.runId });
          // A reconnect of a session whose old connection is not yet known dead: end that one first.
          const older = bySession.get(id);
          if (older) {
            older.conn.destroy();
            await older.done;
          }
          bySession.set(id, { conn, done });
        },
      });
      if (result.sessionId === undefined && !result.committed && result.error && isReplikitError(result.error)) {
        if (!stopping.signal.aborted && result.error.details.protocol === true) refused(result.error, peer);
        return;
      }
      if (sessionId) active--;
      log(describe(result, peer));
      options.onEvent?.({ type: 'session', peer, ...result });
      if (sessionId && bySession.get(sessionId)?.conn === conn) bySession.delete(sessionId);
    } finally {
      finished();
      connections.delete(conn);
      await conn.close().catch(() => undefined);
    }
  };

  const track = (promise: Promise<void>) => {
    work.add(promise);
    void promise.finally(() => work.delete(promise));
  };

  return {
    get activeSessions() {
      return active;
    },
    async listen(address) {
      const server = createSecureServer(options.security, {
        onConnection: (socket, peer) => {
          if (stopping.signal.aborted) {
            socket.destroy();
            return;
          }
          track(serve(socket, peer, false));
        },
        onRefused: refused,
        // A peer without an address was already gone: dropped by the admission (and logged there).
        onAbandoned: (peer) => {
          if (!peer.startsWith('?')) leftEarly(peer, 'connection dropped during the TLS handshake');
        },
      });
      // Before the TLS layer sees the socket: the deadline and the caps start at accept.
      server.prependListener('connection', (socket: Socket) => admission.admit(socket));
      await new Promise<void>((resolve, reject) => {
        server.once('error', (error) => reject(bindError(error, address)));
        server.listen(address.port, address.host, () => {
          server.removeAllListeners('error');
          resolve();
        });
      });
      // A failed accept (EMFILE when descriptors run out) is logged, never a crash.
      server.on('error', (error: NodeJS.ErrnoException) =>
        burst.add('accept failed', '-', `accept failed: ${error.code ?? ''} ${error.message}`.trim()),
      );
      servers.push(server);
      const bound = server.address();
      if (!bound || typeof bound === 'string') throw new TransportError('the agent has no address');
      log(`listening on ${bound.address}:${bound.port} (${options.security.kind})`);
      return { host: bound.address, port: bound.port };
    },
    pullFrom(address) {
      const peer = `${address.host}:${address.port}`;
      log(`pulling from ${peer} (${options.security.kind})`);
      const loop = async () => {
        let delay = 50;
        let lastGreeted = false;
        // Waits before the next dial, longer each time nothing got through: a peer that refuses,
        // or accepts and closes at once, is not dialled in a tight loop.
        const backOff = async () => {
          await abortableDelay(delay, stopping.signal);
          delay = Math.min(2000, delay * 2);
        };
        while (!stopping.signal.aborted) {
          let socket: Duplex;
          try {
            socket = await dial(address, options.security, { signal: stopping.signal });
          } catch (error) {
            if (stopping.signal.aborted) break;
            if (isReplikitError(error, 'E_AUTH')) refused(error, peer);
            await backOff();
            continue;
          }
          let greeted = false;
          // A control connection stays open while its engine runs: dial again for the sessions.
          await new Promise<void>((resolve) => {
            const served = serve(socket, peer, true, {
              // The connection waiting after a run's last session ends with that run: not news.
              quietEarlyEnd: lastGreeted,
              onControl: resolve,
              onHandshake: () => {
                greeted = true;
              },
            });
            track(served);
            void served.finally(resolve);
          });
          lastGreeted = greeted;
          if (greeted) delay = 50;
          else if (!stopping.signal.aborted) await backOff();
        }
      };
      track(loop());
    },
    async stop() {
      stopping.abort(new TransportError('the agent is stopping'));
      await Promise.all(servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
      admission.close();
      // Connections still in the handshake or waiting for a session have nothing to finish.
      for (const conn of connections) {
        if (![...bySession.values()].some((entry) => entry.conn === conn)) conn.destroy();
      }
      await Promise.all([...work]);
      for (const hasher of ready.values()) await hasher.close?.();
      ready.clear();
      making.clear();
      burst.close();
      log('stopped');
    },
  };
}
