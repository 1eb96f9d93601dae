import type { Duplex } from 'node:stream';
import { ReplikitError, TransportError } from '@replikit/core';
import type { BlockArena } from './protocol/block-arena.js';
import { FrameType } from './protocol/constants.js';
import { FrameDecoder, type RawFrame } from './protocol/frame-decoder.js';
import { encodeMessage, type Message, parseBlockFrame, parseFrame } from './protocol/messages.js';
import { isDamaged, isProtocolError } from './protocol/protocol-error.js';

/** Frames decoded but not yet taken before the socket is paused (back-pressure on reads). */
const QUEUE_HIGH = 64;

/**
 * Bytes queued on the stream before a writer is told to wait. Well above the socket's own
 * 16 KiB mark, so that a block writer does not stall on every 64 KiB block.
 */
const SEND_HIGH = 1024 * 1024;

/** An error the peer reported in an `error` frame. */
export class RemoteError extends ReplikitError {}

/** Turns a received `error` frame into an error of the same code. */
function remoteError(message: Extract<Message, { type: 'error' }>, peer: string): ReplikitError {
  return new RemoteError(message.code, `${peer} reported: ${message.message}`, {
    details: {
      remote: true,
      retry: message.retry,
      ...(message.resendWhole ? { resendWhole: message.resendWhole } : {}),
      ...(message.message.startsWith('protocol error') ? { protocol: true } : {}),
    },
  });
}

/**
 * One byte stream carrying frames: writes messages with the stream's back-pressure, reads them
 * through a bounded queue (the socket is paused while the queue is full). The first failure —
 * a malformed frame, an `error` frame from the peer, a reset — ends the connection, and every
 * waiting reader gets it.
 */
export class FrameConnection {
  private readonly decoder: FrameDecoder;
  private readonly queue: Message[] = [];
  private waiter:
    | { resolve(m: Message | undefined): void; reject(e: unknown): void; interruptible: boolean }
    | undefined;
  private failure: ReplikitError | undefined;
  private drainWaiters: Array<{ resolve(): void; reject(e: unknown): void }> = [];
  /** Bytes written to the stream. */
  bytesOut = 0;
  /** Bytes read from the stream. */
  bytesIn = 0;
  /** Resolves when the stream is closed, with the error that ended it, if any. */
  readonly closed: Promise<ReplikitError | undefined>;
  /** When bytes last arrived, or a reader started to wait (ms, `performance.now()`). */
  private lastActivity = 0;
  private idleTimer: NodeJS.Timeout | undefined;
  private resolveClosed!: (error: ReplikitError | undefined) => void;

  constructor(
    readonly socket: Duplex,
    /** Who is at the other end, for messages (`agent 127.0.0.1:7400`). */
    readonly peer: string,
  ) {
    this.decoder = new FrameDecoder();
    this.closed = new Promise((resolve) => {
      this.resolveClosed = resolve;
    });
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('drain', () => this.settleDrain());
    socket.on('error', (error: NodeJS.ErrnoException) => {
      this.fail(
        new TransportError(`connection to ${peer} failed: ${error.code ?? ''} ${error.message}`.trim(), {
          cause: error,
          details: { errno: error.code },
        }),
      );
    });
    socket.on('end', () => {
      this.fail(new TransportError(`${peer} closed the connection`));
      socket.end();
    });
    socket.on('close', () => {
      this.fail(new TransportError(`connection to ${peer} closed`));
      this.resolveClosed(this.failure);
    });
  }

  /** Hands a received block's data back to the arena once it is no longer needed. */
  release(data: Uint8Array): void {
    this.decoder.release(data);
  }

  /** Reads the data of later `block` frames into `arena` (see {@link FrameDecoder.useArena}). */
  useArena(arena: BlockArena | undefined): void {
    this.decoder.useArena(arena);
  }

  /** Raises the bound of `block` frames once the session's block size is known. */
  setMaxBlockPayload(bytes: number): void {
    this.decoder.setMaxBlockPayload(bytes);
  }

  /** Raises the bound of `response` frames once the peer is authenticated and answers are expected. */
  setMaxResponsePayload(bytes: number): void {
    this.decoder.setMaxResponsePayload(bytes);
  }

  /** The error that ended the connection, if it ended. */
  get error(): ReplikitError | undefined {
    return this.failure;
  }

  private onData(chunk: Buffer): void {
    if (this.failure) return;
    this.bytesIn += chunk.length;
    this.lastActivity = performance.now();
    let frames: RawFrame[];
    try {
      frames = this.decoder.push(chunk);
    } catch (error) {
      this.abort(error as ReplikitError, { retry: isDamaged(error) });
      return;
    }
    for (let i = 0; i < frames.length; i++) {
      let message: Message;
      try {
        const frame = frames[i]!;
        message = frame.type === FrameType.block ? parseBlockFrame(frame) : parseFrame(frame);
      } catch (error) {
        this.abort(error as ReplikitError, { retry: isDamaged(error) });
        return;
      }
      if (message.type === 'error') {
        this.fail(remoteError(message, this.peer));
        this.socket.destroy();
        return;
      }
      if (this.waiter) {
        const waiter = this.waiter;
        this.waiter = undefined;
        waiter.resolve(message);
      } else {
        this.queue.push(message);
      }
    }
    if (this.queue.length >= QUEUE_HIGH) this.socket.pause();
  }

  /**
   * The next message if one is already queued (no promise, no turn of the event loop), else
   * `undefined`; {@link FrameConnection.next} waits for one.
   */
  poll(): Message | undefined {
    const message = this.queue.shift();
    if (message && this.queue.length < QUEUE_HIGH / 2 && this.socket.isPaused()) this.socket.resume();
    return message;
  }

  /** The next message from the peer. Rejects once the connection has failed. */
  next(): Promise<Message> {
    return this.wait(false) as Promise<Message>;
  }

  /**
   * Like {@link FrameConnection.next}, but resolves `undefined` when {@link FrameConnection.interrupt}
   * is called while it waits (an agent that stops wakes its sessions' readers this way).
   */
  nextOrInterrupt(): Promise<Message | undefined> {
    return this.wait(true);
  }

  /** Wakes a reader waiting in {@link FrameConnection.nextOrInterrupt} with `undefined`. */
  interrupt(): void {
    const waiter = this.waiter;
    if (!waiter?.interruptible) return;
    this.waiter = undefined;
    waiter.resolve(undefined);
  }

  private wait(interruptible: boolean): Promise<Message | undefined> {
    const message = this.queue.shift();
    if (message) {
      if (this.queue.length < QUEUE_HIGH / 2 && this.socket.isPaused()) this.socket.resume();
      return Promise.resolve(message);
    }
    if (this.failure) return Promise.reject(this.failure);
    if (this.socket.isPaused()) this.socket.resume();
    this.lastActivity = performance.now();
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject, interruptible };
    });
  }

  /**
   * Ends the connection when a reader has waited `ms` for the peer's next frame without a byte
   * arriving (a peer that vanished without closing, a client that connects and says nothing).
   * Time spent on this side (a slow write while the socket is paused) does not count. The
   * `error` frame says `retry: true`: a live source side reconnects and resumes. `0` or
   * `undefined` turns the check off.
   */
  setIdleTimeout(ms: number | undefined): void {
    if (this.idleTimer) clearInterval(this.idleTimer);
    this.idleTimer = undefined;
    if (!ms || this.failure) return;
    this.lastActivity = performance.now();
    this.idleTimer = setInterval(
      () => {
        if (!this.waiter || performance.now() - this.lastActivity < ms) return;
        const seconds = ms >= 1000 ? `${Math.round(ms / 1000)} s` : `${ms} ms`;
        this.abort(
          new TransportError(
            `${this.peer} sent nothing for ${seconds}: closed the idle connection (a source side reconnects and resumes)`,
            { details: { idle: true, idleTimeoutMs: ms } },
          ),
          { retry: true },
        );
      },
      Math.max(10, Math.min(1000, ms / 4)),
    );
    this.idleTimer.unref();
  }

  /** The next message, which must be of type `type`. */
  async expect<T extends Message['type']>(type: T): Promise<Extract<Message, { type: T }>> {
    const message = await this.next();
    if (message.type !== type) {
      const error = new TransportError(
        `protocol error: expected a '${type}' frame from ${this.peer}, got '${message.type}'`,
        {
          details: { protocol: true },
        },
      );
      this.abort(error);
      throw error;
    }
    return message as Extract<Message, { type: T }>;
  }

  /**
   * Writes a message. Returns false when more than 1 MiB waits in the stream's buffer: the
   * caller should await {@link FrameConnection.drained} before writing more.
   */
  send(message: Message): boolean {
    if (this.failure) throw this.failure;
    const chunks = encodeMessage(message);
    let ok = true;
    // Frames written in one tick leave together: one writev, and over TLS full 16 KiB records
    // instead of a short record at the end of every block frame.
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      process.nextTick(this.uncork);
    }
    for (const chunk of chunks) {
      this.bytesOut += chunk.length;
      ok = this.socket.write(chunk);
    }
    return ok || this.socket.writableLength < SEND_HIGH;
  }

  private corked = false;
  private readonly uncork = (): void => {
    this.corked = false;
    this.socket.uncork();
  };

  /** True when the stream's buffer is below the mark at which {@link FrameConnection.send} says wait. */
  get writable(): boolean {
    return !this.failure && (!this.socket.writableNeedDrain || this.socket.writableLength < SEND_HIGH);
  }

  /** Resolves when the stream can take more (at once when it can now). */
  drained(): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (!this.socket.writableNeedDrain || this.socket.writableLength < SEND_HIGH) return Promise.resolve();
    return new Promise((resolve, reject) => this.drainWaiters.push({ resolve, reject }));
  }

  private settleDrain(): void {
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const waiter of waiters) waiter.resolve();
  }

  private fail(error: ReplikitError): void {
    if (this.failure) return;
    this.failure = error;
    if (this.idleTimer) clearInterval(this.idleTimer);
    this.idleTimer = undefined;
    this.queue.length = 0;
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.reject(error);
    const drains = this.drainWaiters;
    this.drainWaiters = [];
    for (const d of drains) d.reject(error);
  }

  /**
   * Ends the connection because of `error`: tells the peer in an `error` frame (unless the error
   * came from the peer), then closes. `resendWhole` asks a source to resend that block whole.
   */
  abort(
    error: ReplikitError,
    options: { retry?: boolean; resendWhole?: { stream: number; index: number } } = {},
  ): void {
    if (!this.failure && !(error instanceof RemoteError)) {
      try {
        const message = error.message.slice(0, 4000);
        for (const chunk of encodeMessage({
          type: 'error',
          code: error.code,
          message,
          retry: options.retry ?? false,
          ...(options.resendWhole ? { resendWhole: options.resendWhole } : {}),
        })) {
          this.socket.write(chunk);
        }
      } catch {
        // The stream is already gone; closing below is all that is left to do.
      }
    }
    this.fail(error);
    this.socket.end();
    // Give the error frame a moment to leave, then make sure the socket goes away.
    const timer = setTimeout(() => this.socket.destroy(), isProtocolError(error) ? 200 : 1000);
    timer.unref();
    this.socket.once('close', () => clearTimeout(timer));
  }

  /** Closes the connection without an error (after a completed exchange). */
  close(): Promise<void> {
    this.fail(new TransportError(`connection to ${this.peer} was closed by this side`));
    this.socket.end();
    const timer = setTimeout(() => this.socket.destroy(), 1000);
    timer.unref();
    return this.closed.then(() => clearTimeout(timer));
  }

  /** Destroys the stream at once. */
  destroy(): void {
    this.fail(new TransportError(`connection to ${this.peer} was dropped by this side`));
    this.socket.destroy();
  }
}
