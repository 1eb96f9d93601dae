import type { Socket } from 'node:net';

/** How long a connection may take from accept to a completed `hello` (TLS included) by default: 10 s. */
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;
/** Connections that have not completed their handshake, at most, by default. */
export const DEFAULT_MAX_UNAUTHENTICATED = 128;
/** Connections from one remote address that have not completed their handshake, at most, by default. */
export const DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS = 16;

/** Why the agent's admission control dropped a connection. */
export type DropReason = 'deadline' | 'cap';

/** Options of the agent's admission control. */
export interface AdmissionOptions {
  /** Milliseconds from accept to a completed handshake; `0`: no deadline. */
  handshakeTimeoutMs: number;
  /** Unauthenticated connections at most (all addresses). */
  maxUnauthenticated: number;
  /** Unauthenticated connections at most from one remote address. */
  maxUnauthenticatedPerAddress: number;
  /** Called for each connection dropped, after it was destroyed. */
  onDrop(peer: string, address: string, reason: DropReason): void;
}

interface Pending {
  socket: Socket;
  address: string;
  peer: string;
  timer: NodeJS.Timeout | undefined;
}

/** `address:port` of a socket, as the agent names peers. */
export function peerOf(socket: Socket): string {
  return `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
}

/**
 * Keeps connections that have not authenticated yet in check: each must complete its handshake
 * (the TLS handshake and `hello`, with the key proof on plain TCP) before a deadline, and only so
 * many may wait at once, per remote address and in total. Over a cap, the **oldest** waiting
 * connection (of that address for the per-address cap) is dropped, never the new one: a
 * legitimate source, whose handshake takes milliseconds, is the newest while it waits, so a flood
 * that holds the slots cannot keep it out (it would have to open as many connections as the cap
 * within that handshake); one it still loses is retried by the source's reconnect. Authenticated
 * connections are not counted.
 */
export class Admission {
  /** Waiting connections by peer (`address:port`), oldest first. */
  private readonly pending = new Map<string, Pending>();
  private readonly byAddress = new Map<string, Set<Pending>>();
  /** Peers this admission dropped and whose socket has not closed yet. */
  private readonly dropped = new Set<string>();
  private closed = false;

  constructor(private readonly options: AdmissionOptions) {}

  /** Unauthenticated connections now. */
  get size(): number {
    return this.pending.size;
  }

  /** Takes in a newly accepted socket (before any byte is read from it, TLS included). */
  admit(socket: Socket): void {
    const peer = peerOf(socket);
    const address = socket.remoteAddress ?? '?';
    if (this.closed) {
      socket.destroy();
      return;
    }
    const entry: Pending = { socket, address, peer, timer: undefined };
    const { handshakeTimeoutMs } = this.options;
    if (handshakeTimeoutMs > 0) {
      entry.timer = setTimeout(() => this.drop(entry, 'deadline'), handshakeTimeoutMs);
      entry.timer.unref();
    }
    socket.once('close', () => {
      this.forget(entry);
      // Kept a moment after the close, for the handshake that fails because of it to ask.
      if (this.dropped.has(peer)) setTimeout(() => this.dropped.delete(peer), 1000).unref();
    });
    let mine = this.byAddress.get(address);
    if (!mine) {
      mine = new Set();
      this.byAddress.set(address, mine);
    }
    if (mine.size >= this.options.maxUnauthenticatedPerAddress) {
      const oldest = mine.values().next().value;
      if (oldest) this.drop(oldest, 'cap');
    } else if (this.pending.size >= this.options.maxUnauthenticated) {
      const oldest = this.pending.values().next().value;
      if (oldest) this.drop(oldest, 'cap');
    }
    this.pending.set(peer, entry);
    mine.add(entry);
  }

  /** The connection of `peer` completed its handshake: it no longer counts, and has no deadline. */
  passed(peer: string): void {
    const entry = this.pending.get(peer);
    if (entry) this.forget(entry);
  }

  /** True when this admission dropped the connection of `peer` (its end needs no other log line). */
  droppedPeer(peer: string): boolean {
    return this.dropped.has(peer);
  }

  /** Drops every waiting connection and admits no more (the agent stops). */
  close(): void {
    this.closed = true;
    for (const entry of [...this.pending.values()]) {
      this.forget(entry);
      entry.socket.destroy();
    }
  }

  private drop(entry: Pending, reason: DropReason): void {
    if (this.pending.get(entry.peer) !== entry) return;
    this.forget(entry);
    this.dropped.add(entry.peer);
    entry.socket.destroy();
    this.options.onDrop(entry.peer, entry.address, reason);
  }

  private forget(entry: Pending): void {
    if (entry.timer) clearTimeout(entry.timer);
    entry.timer = undefined;
    if (this.pending.get(entry.peer) === entry) this.pending.delete(entry.peer);
    const mine = this.byAddress.get(entry.address);
    if (mine?.delete(entry) && mine.size === 0) this.byAddress.delete(entry.address);
  }
}
