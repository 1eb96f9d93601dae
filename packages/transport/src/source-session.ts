import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { Duplex } from 'node:stream';
import {
  AbortError,
  type BlockChannel,
  type BlockDigest,
  type BlockHasher,
  type BlockOp,
  type DeltaOp,
  type DeltaSent,
  type DiskChannel,
  type DiskRef,
  isReplikitError,
  type OperationOptions,
  type ReplikitError,
  type SessionSpec,
  TransportError,
  throwIfAborted,
} from '@replikit/core';
import { createNodeHasher, type TokenBucket, worthCompressing } from '@replikit/core/internal';
import { abortableDelay } from './abortable-delay.js';
import { CodecGovernor } from './codec-governor.js';
import { availableCodecs, type BlockCodec, codecById, MIN_SAVING, maybeCompress, negotiateCodec } from './codecs.js';
import { FrameConnection } from './connection.js';
import { handshake } from './handshake.js';
import type { AnyHasherFactory } from './hasher.js';
import { BLOCK_FIXED_BYTES, FEATURE_DELTA, HEADER_BYTES, MAX_DIGEST_BYTES } from './protocol/constants.js';
import type { Message } from './protocol/messages.js';
import { isDamaged, isProtocolError } from './protocol/protocol-error.js';
import { DIGEST_BATCH } from './target-session.js';
import { WindowSizer } from './window-sizer.js';
import { encodeBlockDelta } from './wire/block-delta.js';

/** Operations being encoded or waiting for the window, per disk, before `send` waits. */
const PIPELINE_DEPTH = 8;

/** How a broken connection is retried. */
export interface ReconnectPolicy {
  /**
   * Attempts after a connection drops, before the session fails.
   * @default 10
   */
  attempts: number;
  /**
   * Delay before the first attempt, doubled after each failed one.
   * @default 50
   */
  initialDelayMs: number;
  /**
   * Longest delay between attempts.
   * @default 2000
   */
  maxDelayMs: number;
}

/** What a source session needs; resolved by the transports' factories. */
export interface SourceSessionOptions {
  /** Opens a fresh authenticated byte stream to the target side (dial, or wait for a pulled one). */
  connect(signal: AbortSignal): Promise<Duplex>;
  /** Whether this side opened the stream (push) or the target did (pull). */
  dialer: boolean;
  /** Who is at the other end, for messages. */
  peer: string;
  /** Shared key for the `hello` proofs (plain TCP). */
  key: Uint8Array | undefined;
  /**
   * The codec asked for: `auto` (adaptive, the best both ends have), `none`, or a codec name
   * the peer must offer; settled per connection with {@link negotiateCodec}.
   */
  codec: string;
  /** Bytes of block payload sent but not yet acked as durable, at most (per disk). */
  windowBytes: number;
  /** Size each disk's window to the measured link (up to `windowBytes`) rather than to `windowBytes`. */
  adaptiveWindow: boolean;
  reconnect: ReconnectPolicy;
  /** Caps wire bytes per second. */
  throttle: TokenBucket | undefined;
  /** Computes a block's digest when the caller sent none. */
  hasher?: AnyHasherFactory;
}

/** Errors a reconnect cannot cure. */
function isFatal(error: unknown): boolean {
  if (!isReplikitError(error)) return true;
  if (error.details.remote === true) return error.details.retry !== true;
  if (isDamaged(error)) return false;
  if (isProtocolError(error)) return true;
  return error.code !== 'E_TRANSPORT';
}

/** An operation of the window: kept until the target acks it durable, resent after a reconnect. */
interface Pending {
  message: Message;
  /** Block index after the operation. */
  end: number;
  /** Payload bytes held. */
  bytes: number;
  /** Data bytes the target writes for it. */
  rawBytes: number;
  /** A delta's whole block, sent instead of it if the target finds it lacks the delta's base. */
  whole?: Uint8Array;
}

class Waiters {
  private waiting = new Set<() => void>();

  notify(): void {
    if (this.waiting.size === 0) return;
    const all = this.waiting;
    this.waiting = new Set();
    for (const wake of all) wake();
  }

  /** Waits until `ready()` holds; `check()` throws when waiting is pointless (session failed). */
  async until(ready: () => boolean, check: () => void, signal?: AbortSignal): Promise<void> {
    while (!ready()) {
      check();
      throwIfAborted(signal);
      await new Promise<void>((resolve, reject) => {
        const onAbort = () => {
          this.waiting.delete(wake);
          reject(new AbortError('the transfer was cancelled'));
        };
        const wake = () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        };
        this.waiting.add(wake);
        signal?.addEventListener('abort', onAbort, { once: true });
      });
    }
    check();
  }
}

class SourceDiskChannel implements DiskChannel {
  bytesSent = 0;
  /** Block index after the last operation sent. */
  sentEnd = 0;
  /** Block index after the last operation given to `send` (perhaps still being encoded). */
  private acceptedEnd = 0;
  /** Operations between `send` and the window. */
  private inPipeline = 0;
  private tail: Promise<void> = Promise.resolve();
  private pipelineError: unknown;
  ackedEnd = 0;
  private ackedRaw = 0;
  readonly window: Pending[] = [];
  private windowBytes = 0;
  flushRequested = false;
  /** Highest block a checkpoint waits to see acked. */
  private wantEnd = 0;
  /** Senders waiting for room in the window. */
  private roomWaiters = 0;
  closing = false;
  closed = false;
  blockCount = 0;
  /** Replica digests received but not yet consumed, and the request state. */
  digestQueue: Array<BlockDigest> = [];
  digestNext = 0;
  digestRequestedEnd = 0;
  digestEnd = false;
  digestsActive = false;
  private hasher: BlockHasher | undefined;
  /** The window's size now: adapted to the link's measured round trip and bandwidth. */
  readonly sizer: WindowSizer;

  /**
   * Sends a changed block as a delta: present only when the agent said (in its `hello`) that it
   * applies them, so the engine sends whole blocks to an agent that does not.
   */
  readonly sendDelta?: (op: DeltaOp, options?: OperationOptions) => Promise<DeltaSent>;

  constructor(
    private readonly session: SourceSession,
    readonly stream: number,
    readonly disk: DiskRef,
  ) {
    if (session.peerTakesDeltas) this.sendDelta = (op, options) => this.sendDeltaOp(op, options);
    this.sizer = new WindowSizer(session.options.windowBytes, session.options.adaptiveWindow);
  }

  get bytesWritten(): number {
    return this.ackedRaw;
  }

  /** Wire bytes a message takes. */
  private static frameBytes(message: Message): number {
    if (message.type === 'block')
      return HEADER_BYTES + BLOCK_FIXED_BYTES + message.digest.length + message.payload.length;
    return HEADER_BYTES + 20;
  }

  /** What every operation must pass before it is taken: a live session and channel, block order. */
  private checkAccept(index: number, options?: OperationOptions): void {
    this.session.check();
    this.checkPipeline();
    throwIfAborted(options?.signal);
    if (this.closing) throw new TransportError(`disk channel ${this.disk.id} is closed`);
    if (!Number.isSafeInteger(index) || index < this.acceptedEnd) {
      throw new TransportError(`block ${index} sent out of order (after block ${this.acceptedEnd - 1})`);
    }
  }

  async send(op: BlockOp, options?: OperationOptions): Promise<void> {
    this.checkAccept(op.index, options);
    this.acceptedEnd = op.kind === 'zero' ? op.index + op.count : op.index + 1;
    // The usual case goes on the wire at once, without a promise: nothing queued before it, its
    // digest given, room in the window and in the socket's buffer.
    let ready: Pending | undefined;
    if (this.inPipeline === 0 && (op.kind === 'zero' || op.digest)) {
      ready = this.prepareNow(op);
      if (this.admitNow(ready)) return;
    }
    // Otherwise encoding (a digest to compute) of the next blocks overlaps the sending of earlier
    // ones, and sending waits for the throttle, the window or the socket; frames still leave in
    // order.
    await this.queue(ready ? Promise.resolve(ready) : this.prepare(op), options);
  }

  /**
   * Sends a changed block as a delta from the replica's block (the new bytes of its changed
   * ranges, in the block-delta format of `wire/block-delta.ts`) in a `block` frame flagged as one;
   * the target applies it to the replica's current block and checks the digest of the result
   * before writing. A delta larger than half the block is not worth it: the block goes whole
   * through `send`. The whole block is kept with the delta and sent instead after a reconnect
   * when the replica turns out not to hold the base.
   */
  private async sendDeltaOp(op: DeltaOp, options?: OperationOptions): Promise<DeltaSent> {
    const session = this.session;
    this.checkAccept(op.index, options);
    const rawLength = Math.min(session.spec.blockSize, this.disk.size - op.index * session.spec.blockSize);
    if (op.block.length !== rawLength || (op.base !== null && op.base.length !== rawLength)) {
      throw new TransportError(
        `block ${op.index} and its delta base must have the block's ${rawLength} bytes (got ${op.block.length} and ${op.base?.length ?? 'zeros'})`,
      );
    }
    const delta = encodeBlockDelta(op.block, op.base ?? undefined, rawLength >> 1);
    if (!delta || delta.length === 0) {
      await this.send(
        { kind: 'data', index: op.index, data: op.block, ...(op.digest ? { digest: op.digest } : {}) },
        options,
      );
      return { delta: false, bytes: op.block.length };
    }
    let digest = op.digest;
    if (!digest) {
      this.hasher ??= await (session.options.hasher ?? createNodeHasher)(session.spec.digest);
      [digest] = await this.hasher.hash([op.block]);
    }
    this.checkAccept(op.index, options);
    this.acceptedEnd = op.index + 1;
    const pending: Pending = {
      message: {
        type: 'block',
        stream: this.stream,
        index: op.index,
        codec: 0,
        compressed: false,
        delta: true,
        rawLength,
        digest: digest!,
        payload: delta,
      },
      end: op.index + 1,
      // The whole block kept for a resend is memory the window holds too.
      bytes: delta.length + op.block.length,
      rawBytes: delta.length,
      whole: op.block,
    };
    const sent = { delta: true, bytes: delta.length };
    if (this.inPipeline === 0 && this.admitNow(pending)) return sent;
    await this.queue(Promise.resolve(pending), options);
    return sent;
  }

  /** Puts an operation being prepared behind those before it, waiting while the pipeline is full. */
  private async queue(prepared: Promise<Pending>, options?: OperationOptions): Promise<void> {
    const session = this.session;
    prepared.catch(() => undefined);
    this.inPipeline++;
    this.tail = this.tail
      .then(async () => this.admit(await prepared, options?.signal))
      .catch((error: unknown) => {
        this.pipelineError ??= error;
      })
      .finally(() => {
        this.inPipeline--;
        session.waiters.notify();
      });
    if (this.inPipeline >= PIPELINE_DEPTH) {
      // The pipeline fills while its head waits for the link (or for a digest being computed).
      await session.waitForLink(
        session.waiters.until(
          () => this.inPipeline < PIPELINE_DEPTH,
          () => {
            session.check();
            this.checkPipeline();
          },
          options?.signal,
        ),
      );
    }
  }

  private checkPipeline(): void {
    if (this.pipelineError !== undefined) throw this.pipelineError;
  }

  /** Waits until every operation given to `send` is in the window (sent or to be replayed). */
  private async drain(): Promise<void> {
    await this.tail;
    this.checkPipeline();
  }

  private async prepare(op: BlockOp): Promise<Pending> {
    if (op.kind === 'zero' || op.digest) return this.prepareNow(op);
    const session = this.session;
    this.hasher ??= await (session.options.hasher ?? createNodeHasher)(session.spec.digest);
    const [digest] = await this.hasher.hash([op.data]);
    return this.prepareNow(op, digest);
  }

  /** Encodes an operation whose digest is known (compression, if any, runs here, synchronously). */
  private prepareNow(op: BlockOp, computed?: Uint8Array): Pending {
    const session = this.session;
    if (op.kind === 'zero') {
      return {
        message: { type: 'zero', stream: this.stream, index: op.index, count: op.count },
        end: op.index + op.count,
        bytes: 0,
        rawBytes: 0,
      };
    }
    const digest = op.digest ?? computed;
    const codec = session.codec;
    const compressed = codec ? session.compress(codec, op.data) : undefined;
    const payload = compressed ?? op.data;
    return {
      message: {
        type: 'block',
        stream: this.stream,
        index: op.index,
        codec: compressed ? codec!.id : 0,
        compressed: compressed !== undefined,
        rawLength: op.data.length,
        digest: digest ?? new Uint8Array(0),
        payload,
      },
      end: op.index + 1,
      bytes: payload.length,
      rawBytes: op.data.length,
    };
  }

  /**
   * Puts a prepared operation into the window and on the wire at once when that needs no wait:
   * no throttle, room in the window, and a live connection whose buffer is below its mark.
   * Returns false (having done nothing) otherwise.
   */
  private admitNow(pending: Pending): boolean {
    const session = this.session;
    if (session.options.throttle) return false;
    const limit = this.sizer.limit;
    if (this.windowBytes + pending.bytes > limit && this.window.length > 0) return false;
    if (!session.canSendNow()) return false;
    this.window.push(pending);
    this.windowBytes += pending.bytes;
    session.payloadSent += pending.bytes;
    this.sentEnd = pending.end;
    this.bytesSent += SourceDiskChannel.frameBytes(pending.message);
    session.post(pending.message);
    if (this.windowBytes >= limit / 2) this.requestFlush();
    return true;
  }

  /** Puts a prepared operation into the window (waiting for room) and on the wire. */
  private async admit(pending: Pending, signal?: AbortSignal): Promise<void> {
    const session = this.session;
    const wire = SourceDiskChannel.frameBytes(pending.message);
    if (session.options.throttle) await session.waitForLink(session.options.throttle.take(wire, signal));
    // Back-pressure: room in the window of unacked bytes (the target acks after a flush).
    const limit = this.sizer.limit;
    if (this.windowBytes + pending.bytes > limit && this.window.length > 0) {
      this.requestFlush();
      this.roomWaiters++;
      try {
        // The limit may change with each ack (the window adapts): read it again.
        await session.waitForLink(
          session.waiters.until(
            () => this.windowBytes + pending.bytes <= this.sizer.limit || this.window.length === 0,
            () => session.check(),
            signal,
          ),
        );
      } finally {
        this.roomWaiters--;
      }
    }
    this.window.push(pending);
    this.windowBytes += pending.bytes;
    session.payloadSent += pending.bytes;
    this.sentEnd = pending.end;
    this.bytesSent += wire;
    await session.transmit(pending.message, signal);
    if (this.windowBytes >= this.sizer.limit / 2) this.requestFlush();
  }

  /** Asks the target to make the stream durable and ack it (once per outstanding flush). */
  requestFlush(): void {
    if (this.flushRequested) return;
    this.flushRequested = true;
    this.sizer.flushSent(performance.now());
    this.session.post({ type: 'flush', stream: this.stream });
  }

  onAck(end: number): void {
    this.flushRequested = false;
    if (end > this.ackedEnd) this.ackedEnd = end;
    let freed = 0;
    while (this.window.length > 0 && this.window[0]!.end <= this.ackedEnd) {
      const done = this.window.shift()!;
      this.windowBytes -= done.bytes;
      freed += done.bytes;
      this.ackedRaw += done.rawBytes;
    }
    this.sizer.acked(performance.now(), freed);
    this.session.payloadAcked += freed;
    // More may have been sent after the flush: keep the window moving while anyone waits.
    const behind = this.ackedEnd < this.wantEnd || this.roomWaiters > 0;
    if (this.window.length > 0 && (behind || this.windowBytes >= this.sizer.limit / 2)) {
      this.requestFlush();
    }
  }

  onClosed(): void {
    this.closed = true;
    this.onAck(this.sentEnd);
  }

  /**
   * Turns the delta of block `index` still in the window into its whole block, for the resend
   * that follows a reconnect (the target found the replica no longer holds the delta's base).
   * Returns false when there is no such delta or its whole block was not given.
   */
  resendWhole(index: number): boolean {
    const pending = this.window.find((p) => p.message.type === 'block' && p.message.delta && p.message.index === index);
    if (!pending?.whole || pending.message.type !== 'block') return false;
    const whole = pending.whole;
    const codec = this.session.codec;
    const compressed = maybeCompress(codec, whole);
    const payload = compressed ?? whole;
    pending.message = {
      type: 'block',
      stream: this.stream,
      index,
      codec: compressed ? codec!.id : 0,
      compressed: compressed !== undefined,
      rawLength: whole.length,
      digest: pending.message.digest,
      payload,
    };
    delete pending.whole;
    this.windowBytes += payload.length - pending.bytes;
    pending.bytes = payload.length;
    pending.rawBytes = whole.length;
    return true;
  }

  /** Re-sends what a new connection must know about this stream: unacked operations, requests. */
  replay(conn: FrameConnection, peerCodecs: readonly string[]): void {
    for (const pending of this.window) {
      const message = pending.message;
      // A block compressed for the last peer with a codec this one lacks (another agent answered
      // the reconnect) goes raw.
      if (message.type === 'block' && message.compressed) {
        const codec = codecById(message.codec);
        if (!peerCodecs.includes(codec.name)) {
          const raw = codec.decode(message.payload, message.rawLength);
          pending.message = { ...message, codec: 0, compressed: false, payload: raw };
          this.windowBytes += raw.length - pending.bytes;
          pending.bytes = raw.length;
        }
      }
      conn.send(pending.message);
    }
    this.flushRequested = false;
    if (this.window.length > 0) this.requestFlush();
    if (this.digestsActive && !this.digestEnd) {
      this.digestRequestedEnd = this.digestNext + this.digestQueue.length;
      this.requestDigests();
    }
    if (this.closing) conn.send({ type: 'close-disk', stream: this.stream });
  }

  async checkpoint(options?: OperationOptions): Promise<number> {
    const session = this.session;
    await this.drain();
    const target = this.sentEnd;
    if (this.ackedEnd >= target && this.window.length === 0) return target;
    this.wantEnd = Math.max(this.wantEnd, target);
    this.requestFlush();
    await session.waitForLink(
      session.waiters.until(
        () => this.ackedEnd >= target,
        () => session.check(),
        options?.signal,
      ),
    );
    return target;
  }

  private requestDigests(): void {
    if (this.digestEnd || this.digestRequestedEnd >= this.blockCount) return;
    const count = Math.min(DIGEST_BATCH, this.blockCount - this.digestRequestedEnd);
    this.session.post({ type: 'digests-request', stream: this.stream, from: this.digestRequestedEnd, count });
    this.digestRequestedEnd += count;
  }

  onDigests(from: number, digests: Array<Uint8Array | null>, last: boolean): void {
    const expected = this.digestNext + this.digestQueue.length;
    if (from !== expected) return; // a stale answer from before a reconnect
    for (const [i, digest] of digests.entries()) this.digestQueue.push({ index: from + i, digest });
    if (last || from + digests.length >= this.blockCount) this.digestEnd = true;
    this.session.waiters.notify();
  }

  async *replicaDigests(fromBlock: number, options?: OperationOptions): AsyncIterable<BlockDigest> {
    const session = this.session;
    if (this.digestsActive) throw new TransportError(`replica digests of ${this.disk.id} are already being read`);
    this.digestsActive = true;
    this.digestQueue = [];
    this.digestNext = fromBlock;
    this.digestRequestedEnd = fromBlock;
    this.digestEnd = fromBlock >= this.blockCount;
    try {
      this.requestDigests();
      for (;;) {
        if (
          this.digestQueue.length < DIGEST_BATCH / 2 &&
          this.digestRequestedEnd - this.digestNext < DIGEST_BATCH * 2
        ) {
          this.requestDigests();
        }
        if (this.digestQueue.length === 0) {
          if (this.digestEnd) return;
          await session.waiters.until(
            () => this.digestQueue.length > 0 || this.digestEnd,
            () => session.check(),
            options?.signal,
          );
          continue;
        }
        const next = this.digestQueue.shift()!;
        this.digestNext = next.index + 1;
        yield next;
      }
    } finally {
      this.digestsActive = false;
    }
  }

  async close(options?: OperationOptions): Promise<void> {
    if (this.closed) return;
    const session = this.session;
    if (!this.closing) {
      await this.tail;
      this.closing = true;
      if (session.failure) return;
      session.post({ type: 'close-disk', stream: this.stream });
    }
    await session.waiters.until(
      () => this.closed,
      () => session.check(),
      options?.signal,
    );
    session.streams.delete(this.stream);
  }
}

/**
 * The source side of a network session: a {@link @replikit/core!BlockChannel} whose operations travel as frames
 * to a target agent. Keeps a bounded window of unacked operations; when the connection drops it
 * reconnects with backoff, reopens the session and its disks, and resends the window, so the
 * engine never notices a drop that a reconnect cures.
 */
export class SourceSession implements BlockChannel {
  readonly id = randomUUID();
  readonly streams = new Map<number, SourceDiskChannel>();
  readonly waiters = new Waiters();
  failure: ReplikitError | undefined;
  private conn: FrameConnection | undefined;
  private connecting: Promise<FrameConnection> | undefined;
  private nextStream = 1;
  private committed = false;
  private committing = false;
  private readonly lifetime = new AbortController();
  /** Connections made (1 + reconnects). */
  connections = 0;
  /** True when the agent of the first connection that opened applies delta blocks (its `hello` says so). */
  peerTakesDeltas = false;
  /** An ack moved a window forward on the live connection. */
  private progressed = false;
  /** Connections in a row that ended with operations unacked and none acked on them. */
  private fruitless = 0;
  /** The codec of the live connection (settled with its peer), `undefined` for none. */
  codec: BlockCodec | undefined;
  /** The `auto` codec's switch, when the codec is adaptive. */
  governor: CodecGovernor | undefined;
  /** Payload bytes put into the windows of every disk, and acked by the target (the governor's progress). */
  payloadSent = 0;
  payloadAcked = 0;

  constructor(
    readonly spec: SessionSpec,
    readonly options: SourceSessionOptions,
  ) {}

  /** Throws the session's failure, if it failed. */
  check(): void {
    if (this.failure) throw this.failure;
  }

  /** Opens the first connection; an error here (refused, unreachable) fails `open`. */
  async start(signal?: AbortSignal): Promise<void> {
    throwIfAborted(signal);
    try {
      this.conn = await this.establish(true, signal);
    } catch (error) {
      if (isFatal(error) || signal?.aborted) {
        this.fail(error);
        throw error;
      }
      // A link that drops while the session opens is retried like any other drop.
      await this.reconnect(error);
    }
  }

  private async establish(first: boolean, signal?: AbortSignal): Promise<FrameConnection> {
    const abort = signal ? AbortSignal.any([signal, this.lifetime.signal]) : this.lifetime.signal;
    const raw = await this.options.connect(abort);
    const conn = new FrameConnection(raw, this.options.peer);
    let peerCodecs: string[];
    try {
      let peerFeatures: string[];
      ({ peerFeatures, peerCodecs } = await handshake(conn, {
        role: 'source',
        dialer: this.options.dialer,
        codecs: availableCodecs(),
        key: this.options.key,
      }));
      const takesDeltas = peerFeatures.includes(FEATURE_DELTA);
      // Decided by the first connection that opens (disk channels are made after it).
      if (this.connections === 0) this.peerTakesDeltas = takesDeltas;
      else if (this.peerTakesDeltas && !takesDeltas) {
        // Another agent answered the reconnect (a downgrade): the deltas of this run cannot go on.
        throw new TransportError(
          `${this.options.peer} no longer applies delta blocks (a different agent version answered the reconnect); run the job again`,
          { details: { protocol: true } },
        );
      }
      const negotiated = negotiateCodec(this.options.codec, peerCodecs);
      this.codec = negotiated.codec;
      // One governor for the session: what it measured stays true across a reconnect.
      this.governor =
        negotiated.adaptive && negotiated.codec
          ? (this.governor ??
            new CodecGovernor({ progress: () => ({ sent: this.payloadSent, acked: this.payloadAcked }) }))
          : undefined;
      conn.send({
        type: 'session',
        sessionId: this.id,
        spec: this.spec,
        resume: !first,
        codec: this.codec?.name ?? 'none',
      });
      await conn.expect('session-ok');
      for (const stream of this.streams.values()) {
        if (stream.closed) continue;
        conn.send({ type: 'open-disk', stream: stream.stream, disk: stream.disk });
        const opened = await conn.expect('disk-opened');
        stream.blockCount = opened.blockCount;
      }
    } catch (error) {
      conn.destroy();
      throw error;
    }
    this.connections++;
    this.progressed = false;
    // From here on the connection is live: resend what the target has not made durable.
    this.conn = conn;
    for (const stream of this.streams.values()) if (!stream.closed) stream.replay(conn, peerCodecs);
    if (this.committing) conn.send({ type: 'commit' });
    void this.pump(conn);
    return conn;
  }

  /** Reads the target's answers on one connection until it ends. */
  private async pump(conn: FrameConnection): Promise<void> {
    for (;;) {
      let message: Message;
      try {
        message = await conn.next();
      } catch (error) {
        if (this.conn === conn) this.lost(conn, error);
        return;
      }
      const stream = 'stream' in message ? this.streams.get(message.stream) : undefined;
      switch (message.type) {
        case 'ack':
          if (stream && message.end > stream.sentEnd) {
            const error = new TransportError(
              `protocol error: ${conn.peer} acked block ${message.end - 1}, which was never sent`,
              { details: { protocol: true } },
            );
            conn.abort(error);
            this.fail(error);
            return;
          }
          if (stream && message.end > stream.ackedEnd) this.progressed = true;
          stream?.onAck(message.end);
          break;
        case 'digests':
          stream?.onDigests(message.from, message.digests, message.last);
          break;
        case 'disk-closed':
          stream?.onClosed();
          break;
        case 'disk-opened':
          if (stream) stream.blockCount = message.blockCount;
          break;
        case 'committed':
          this.committed = true;
          break;
        default: {
          const error = new TransportError(`protocol error: unexpected '${message.type}' frame from ${conn.peer}`, {
            details: { protocol: true },
          });
          conn.abort(error);
          this.fail(error);
          return;
        }
      }
      this.waiters.notify();
    }
  }

  /** A live connection broke: reconnect in the background unless the error is final. */
  private lost(conn: FrameConnection, error: unknown): void {
    this.conn = undefined;
    conn.destroy();
    if (this.committed || this.failure) return;
    const resend = isReplikitError(error)
      ? (error.details.resendWhole as { stream: number; index: number })
      : undefined;
    if (resend && !this.streams.get(resend.stream)?.resendWhole(resend.index)) {
      this.fail(
        new TransportError(
          `${this.options.peer} could not apply the delta of block ${resend.index} (the replica no longer holds its base) and this side kept no whole block to send instead; run the job again`,
          { cause: error },
        ),
      );
      return;
    }
    if (isFatal(error)) {
      this.fail(error);
      return;
    }
    // Each reconnect may succeed and meet the same failure again (a block the target refuses at
    // every resend): connections that end with nothing of the window acked count as attempts.
    const unacked = [...this.streams.values()].some((stream) => stream.window.length > 0);
    this.fruitless = this.progressed || !unacked ? 0 : this.fruitless + 1;
    if (this.fruitless >= this.options.reconnect.attempts) {
      this.fail(
        new TransportError(
          `the connection to ${this.options.peer} ended ${this.fruitless} times in a row before the target acked anything it was sent; last: ${(error as Error)?.message ?? error}`,
          { cause: error },
        ),
      );
      return;
    }
    this.reconnect(error);
  }

  private reconnect(cause: unknown): Promise<FrameConnection> {
    if (this.connecting) return this.connecting;
    const attempt = async (): Promise<FrameConnection> => {
      const policy = this.options.reconnect;
      let delay = policy.initialDelayMs;
      let last = cause;
      for (let i = 0; i < policy.attempts; i++) {
        await abortableDelay(delay, this.lifetime.signal);
        this.check();
        if (this.lifetime.signal.aborted) throw new AbortError('the session was closed');
        delay = Math.min(policy.maxDelayMs, delay * 2);
        try {
          return await this.establish(false);
        } catch (error) {
          last = error;
          if (isFatal(error)) throw error;
        }
      }
      throw new TransportError(
        `lost the connection to ${this.options.peer} and could not resume after ${policy.attempts} attempts: ${(last as Error)?.message ?? last}`,
        { cause: last },
      );
    };
    this.connecting = attempt()
      .catch((error: unknown) => {
        this.fail(error);
        throw error;
      })
      .finally(() => {
        this.connecting = undefined;
        this.waiters.notify();
      });
    this.connecting.catch(() => undefined);
    return this.connecting;
  }

  private fail(error: unknown): void {
    if (this.failure) return;
    this.failure = isReplikitError(error)
      ? error
      : new TransportError(`the session failed: ${(error as Error)?.message ?? String(error)}`, { cause: error });
    this.conn?.destroy();
    this.conn = undefined;
    this.lifetime.abort(this.failure);
    this.waiters.notify();
  }

  /** Sends a message now if connected; otherwise the next connection's replay covers it. */
  post(message: Message): void {
    const conn = this.conn;
    if (!conn || conn.error) return;
    try {
      conn.send(message);
    } catch {
      // The connection just broke; the pump notices and the replay resends.
    }
  }

  /** True when a frame can be written now without waiting for the socket to drain. */
  canSendNow(): boolean {
    const conn = this.conn;
    return conn !== undefined && !conn.error && !this.connecting && conn.writable;
  }

  /**
   * Compresses a data block with the connection's codec when that pays: always with a codec
   * named explicitly, as the governor says with `auto` (which also learns from each call).
   */
  compress(codec: BlockCodec, block: Uint8Array): Uint8Array | undefined {
    const governor = this.governor;
    if (!governor) return maybeCompress(codec, block);
    if (!governor.wants() || !worthCompressing(block)) {
      governor.block(block.length);
      return undefined;
    }
    const start = performance.now();
    const out = codec.encode(block);
    const ms = performance.now() - start;
    const pays = out.length <= block.length * (1 - MIN_SAVING);
    governor.block(block.length, { outBytes: pays ? out.length : block.length, ms });
    return pays ? out : undefined;
  }

  /** Awaits `wait`, a wait for the link, which the `auto` codec's governor counts. */
  async waitForLink<T>(wait: Promise<T>): Promise<T> {
    const governor = this.governor;
    if (!governor) return wait;
    governor.waitBegin();
    try {
      return await wait;
    } finally {
      governor.waitEnd();
    }
  }

  /** Sends an operation and waits for the socket to take it (its back-pressure). */
  async transmit(message: Message, signal?: AbortSignal): Promise<void> {
    const conn = this.conn;
    if (!conn || conn.error) return;
    try {
      if (!conn.send(message)) await this.waitForLink(conn.drained());
    } catch {
      // Same as above: a broken connection is the pump's business.
    }
    throwIfAborted(signal);
  }

  async openDisk(disk: DiskRef, options?: OperationOptions): Promise<DiskChannel> {
    this.check();
    const stream = new SourceDiskChannel(this, this.nextStream++, disk);
    this.streams.set(stream.stream, stream);
    if (this.conn && !this.conn.error) {
      this.conn.send({ type: 'open-disk', stream: stream.stream, disk });
    }
    await this.waiters.until(
      () => stream.blockCount > 0 || disk.size === 0,
      () => this.check(),
      options?.signal,
    );
    return stream;
  }

  async close(): Promise<void> {
    try {
      if (this.failure) return;
      for (const stream of [...this.streams.values()]) await stream.close();
      this.committing = true;
      this.post({ type: 'commit' });
      await this.waiters.until(
        () => this.committed,
        () => this.check(),
      );
    } finally {
      this.lifetime.abort(new AbortError('the session is closed'));
      const conn = this.conn;
      this.conn = undefined;
      await conn?.close();
    }
  }
}

/** Block frames' bound for a block size, for buffers sized by callers. */
export function maxBlockFrame(blockSize: number): number {
  return HEADER_BYTES + BLOCK_FIXED_BYTES + MAX_DIGEST_BYTES + blockSize;
}
