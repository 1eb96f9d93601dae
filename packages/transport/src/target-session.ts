import {
  type BlockDigest,
  type BlockHasher,
  type BlockOp,
  isReplikitError,
  ReplikitError,
  type SessionSpec,
  TransportError,
} from '@replikit/core';
import { createNodeHasher } from '@replikit/core/internal';
import { type BlockCodec, codecById } from './codecs.js';
import type { FrameConnection } from './connection.js';
import type { AnyHasherFactory } from './hasher.js';
import { type ArenaPool, BlockArena } from './protocol/block-arena.js';
import { BLOCK_FIXED_BYTES, MAX_DIGEST_BYTES, MAX_DIGESTS_PER_FRAME } from './protocol/constants.js';
import { copyBytes } from './protocol/copy-bytes.js';
import type { BlockMessage, DigestsRequestMessage, Message } from './protocol/messages.js';
import { ProtocolError } from './protocol/protocol-error.js';
import type { BlockTarget, TargetDisk } from './wire/block-target.js';
import { WriteLane } from './write-lane.js';

/** One open replica disk of a session on the target side. */
interface TargetStream {
  disk: TargetDisk;
  /** Operations below this block were applied on this connection. */
  end: number;
  /** Replica digests being read for the source, kept open between requests. */
  digests?: { iterator: AsyncIterator<BlockDigest>; next: number };
  /** Serializes digest requests of this stream. */
  digestWork: Promise<void>;
  /** Writes of verified blocks, started in order; the next blocks are decoded and checked meanwhile. */
  writes: WriteLane;
  /** Flushes and their acks, in order; they run beside the reading of later blocks. */
  flushes: Promise<void>;
}

/** Verified bytes a stream may queue for writing before the reader waits for the writer. */
const WRITE_QUEUE_BYTES = 8 * 1024 * 1024;

/**
 * Writes of one stream running at once: enough for the agent's writer to merge adjacent blocks
 * into writes of megabytes (the write queue bounds the bytes).
 */
const WRITE_DEPTH = 128;

/** Bytes of the arena into which a connection reads block data (bounded like the write queue). */
const ARENA_BYTES = 16 * 1024 * 1024;

/**
 * An arena for the blocks of a session, in the hasher's shared memory when it has some
 * (`BlockHasher.allocate`: the dedup package's pool hashes batches that go to its threads there in
 * place; the single blocks a session hashes it copies once into its own memory on the calling
 * thread), else in plain memory. Block data is copied into it with a
 * native `memcpy` (see `copyBytes`), not with `TypedArray#set`, which V8 runs byte by byte with
 * relaxed atomic stores into shared memory when source and destination are not aligned alike (as
 * block data cut from TLS records is not: measured 3 GB/s instead of 50). None when fewer than
 * two blocks fit.
 */
function arenaFor(blockSize: number, pool: ArenaPool | undefined, hasher: BlockHasher): BlockArena | undefined {
  const slots = Math.floor(ARENA_BYTES / blockSize);
  if (slots < 2) return undefined;
  if (pool) return pool.take(blockSize, slots, hasher);
  const bytes = slots * blockSize;
  return new BlockArena(hasher.allocate ? hasher.allocate(bytes) : new Uint8Array(bytes), blockSize);
}

/**
 * Decodes a compressed block; a payload that does not decode to exactly its raw length is damage
 * (the frame check passed, so only the data can be wrong: the digest's domain). When the payload
 * lies in an arena slot, the decoded block is copied into that same slot (a block never outgrows
 * its slot), so that it is written with its neighbours; otherwise the slot, if any, is released.
 * Decoding runs on the main thread, like compressing on the source side (see `maybeCompress`):
 * node:zlib inflates a 64 KiB block in about 40 µs here, less than a hand-off to another thread.
 */
function decodeBlock(
  codec: BlockCodec,
  message: { index: number; payload: Uint8Array; rawLength: number },
  arena: BlockArena | undefined,
): Uint8Array {
  const { payload, rawLength } = message;
  let decoded: Uint8Array;
  try {
    decoded = codec.decode(payload, rawLength);
  } catch (error) {
    arena?.release(payload);
    throw new TransportError(`block ${message.index} arrived damaged (${(error as Error).message})`, {
      details: { index: message.index },
    });
  }
  if (!arena?.owns(payload) || rawLength > arena.slotBytes) {
    arena?.release(payload);
    return decoded;
  }
  const slot = new Uint8Array(payload.buffer, payload.byteOffset, rawLength);
  copyBytes(slot, 0, decoded);
  return slot;
}

/** True when two digests hold the same bytes (a loop over 16 bytes costs less than a native call). */
function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** What {@link serveTargetSession} reports when a session ends. */
export interface TargetSessionResult {
  sessionId: string | undefined;
  runId: string | undefined;
  /** True when the source committed (every stream closed and durable). */
  committed: boolean;
  bytesWritten: number;
  /** Why the session ended early, if it did. */
  error?: ReplikitError;
}

/** Options of {@link serveTargetSession}. */
export interface TargetSessionOptions {
  /** Called once the session frame arrived: lets the agent end an older connection of the same session. */
  onSession?(sessionId: string, spec: SessionSpec): Promise<void>;
  /** Aborted when the agent stops: the session acks what it applied and ends with a retryable error. */
  stopping?: AbortSignal;
  /** Hashers for the digest check, by algorithm. @default node:crypto */
  hasher?: AnyHasherFactory;
  /**
   * Where the session takes the arena it reads block data into, and gives it back once the
   * connection is closed (an agent keeps one pool for all its sessions).
   * @default a new arena per session
   */
  arenas?: ArenaPool;
  /** The session's first frame when the caller already read it (the agent reads it to tell sessions from target control). */
  first?: Message;
}

/** The first frame of a session, which must be `session`; throws {@link ProtocolError}. */
function sessionFrame(message: Message): Extract<Message, { type: 'session' }> {
  if (message.type !== 'session') throw new ProtocolError(`expected a 'session' frame, got '${message.type}'`);
  return message;
}

/** A block that arrived damaged (its digest or its compressed data): worth a resend. */
function isDamage(error: unknown): boolean {
  return isReplikitError(error, 'E_TRANSPORT') && typeof error.details.index === 'number';
}

/** How a connection ends because of a failed write: retried, and a delta asked for whole. */
function abortOptions(error: unknown): { retry: boolean; resendWhole?: { stream: number; index: number } } {
  const resendWhole = isReplikitError(error)
    ? (error.details.resendWhole as { stream: number; index: number })
    : undefined;
  return { retry: isDamage(error), ...(resendWhole ? { resendWhole } : {}) };
}

function asReplikit(error: unknown): ReplikitError {
  if (error instanceof ReplikitError) return error;
  return new TransportError(`the target failed: ${(error as Error)?.message ?? String(error)}`, { cause: error });
}

/**
 * Serves one session on an authenticated connection, on the target side: opens replica disks
 * through `target`, decodes and verifies each block, writes it, and acks in order once durable.
 * A damaged block (digest mismatch) ends the connection with a retryable error so the source
 * resends it; a malformed frame ends it for good. Nothing of a bad frame is written.
 */
export async function serveTargetSession(
  conn: FrameConnection,
  target: BlockTarget,
  options: TargetSessionOptions = {},
): Promise<TargetSessionResult> {
  const streams = new Map<number, TargetStream>();
  const result: TargetSessionResult = { sessionId: undefined, runId: undefined, committed: false, bytesWritten: 0 };
  let spec: SessionSpec | undefined;
  const stopping = options.stopping;
  // Wakes the read loop when the agent stops: the message being applied finishes first.
  const onStop = () => conn.interrupt();
  stopping?.addEventListener('abort', onStop, { once: true });

  const hasherFor = options.hasher ?? createNodeHasher;
  let hasher!: BlockHasher;
  let arena: BlockArena | undefined;

  const bytesWritten = (bytes: number) => {
    result.bytesWritten += bytes;
  };

  const stream = (id: number): TargetStream => {
    const found = streams.get(id);
    if (!found) throw new ProtocolError(`frame for stream ${id}, which is not open`);
    return found;
  };

  const serveDigests = async (s: TargetStream, request: DigestsRequestMessage) => {
    if (!s.digests || s.digests.next !== request.from) {
      await s.digests?.iterator.return?.();
      s.digests = { iterator: s.disk.digests(request.from)[Symbol.asyncIterator](), next: request.from };
    }
    const digests: Array<Uint8Array | null> = [];
    let last = false;
    while (digests.length < request.count) {
      const next = await s.digests.iterator.next();
      if (next.done) {
        last = true;
        break;
      }
      digests.push(next.value.digest);
    }
    s.digests.next = request.from + digests.length;
    if (conn.error) return;
    conn.send({ type: 'digests', stream: request.stream, from: request.from, digests, last });
  };

  /**
   * Applies one message. The frequent ones (`block`, `zero`, `flush`, `digests-request`) are
   * handled without a promise unless the stream's write queue is full.
   */
  const handle = (message: Message): boolean | Promise<boolean> => {
    switch (message.type) {
      case 'block':
        return onBlock(message);
      case 'zero': {
        const s = stream(message.stream);
        if (message.index < s.end) throw new ProtocolError(`zero run at ${message.index} arrived out of order`);
        const op: BlockOp = { kind: 'zero', index: message.index, count: message.count };
        s.writes.add(0, () => s.disk.apply(op));
        s.end = message.index + message.count;
        return s.writes.full ? s.writes.room().then(() => true) : true;
      }
      case 'flush': {
        const s = stream(message.stream);
        // Everything accepted so far is written, made durable and acked while reading goes on.
        const end = s.end;
        const written = s.writes.settled();
        written.catch(() => undefined);
        s.flushes = s.flushes.then(async () => {
          await written;
          await s.disk.flush();
          if (!conn.error) conn.send({ type: 'ack', stream: message.stream, end });
        });
        s.flushes.catch((error: unknown) => conn.abort(asReplikit(error), abortOptions(error)));
        return true;
      }
      case 'digests-request': {
        const s = stream(message.stream);
        // Digests are read beside the writes (the source asks for blocks ahead of those it sends).
        s.digestWork = s.digestWork
          .then(() => serveDigests(s, message))
          .catch((error: unknown) => conn.abort(asReplikit(error)));
        return true;
      }
      default:
        return handleControl(message);
    }
  };

  const onBlock = (message: BlockMessage): true | Promise<true> => {
    const s = stream(message.stream);
    if (message.index < s.end) throw new ProtocolError(`block ${message.index} arrived out of order`);
    if (message.rawLength > spec!.blockSize) throw new ProtocolError(`block of ${message.rawLength} bytes`);
    if (message.digest.length === 0) throw new ProtocolError(`block ${message.index} carries no digest`);
    if (message.digest.length !== hasher.digestLength) {
      throw new ProtocolError(`block ${message.index} carries a ${message.digest.length}-byte digest`);
    }
    const index = message.index;
    const expected = message.digest;
    const writes = s.writes;
    if (message.delta) return onDelta(s, message);
    // The write is queued now and starts, in order, only once the digest checked out: nothing
    // unverified is ever written. Each block is hashed alone, as it arrives: the dedup package's
    // pool hashes a batch of up to 256 KiB on the calling thread (xxh128 with SIMD, ~4 µs per
    // 64 KiB), which costs less than one round trip to a hashing thread (two thread wake-ups,
    // 150–400 µs here) and leaves no block waiting for a batch to fill.
    const bytes = message.compressed ? decodeBlock(codecById(message.codec), message, arena) : message.payload;
    const entry = writes.add(
      message.rawLength,
      () =>
        s.disk.apply({ kind: 'data', index, data: bytes }).then(() => {
          bytesWritten(bytes.length);
          // The arena slot goes back to the decoder once the block is written.
          conn.release(bytes);
        }),
      false,
    );
    hasher.hash([bytes]).then(
      (digests) => {
        const actual = digests[0];
        if (actual && sameBytes(actual, expected)) writes.ready(entry);
        else {
          writes.fail(
            new TransportError(`block ${index} of disk ${s.disk.disk.id} arrived damaged (digest mismatch)`, {
              details: { index },
            }),
          );
        }
      },
      (error: unknown) => writes.fail(error ?? new Error('the hasher failed')),
    );
    s.end = message.index + 1;
    return writes.full ? writes.room().then(() => true as const) : true;
  };

  /**
   * A delta block, applied in order with the writes before it: `TargetDisk.applyDelta` reads the
   * replica's current block, applies the records, checks the digest of the result and only then
   * writes (a damaged or misapplied delta writes nothing and ends the connection for a resend).
   */
  const onDelta = (s: TargetStream, message: BlockMessage): true | Promise<true> => {
    const { index, payload, digest } = message;
    const blockBytes = Math.min(spec!.blockSize, s.disk.disk.size - index * spec!.blockSize);
    if (blockBytes <= 0) throw new ProtocolError(`delta for block ${index}, past the end of the disk`);
    if (message.rawLength !== blockBytes) {
      throw new ProtocolError(
        `the delta of block ${index} says the block holds ${message.rawLength} bytes, not ${blockBytes}`,
      );
    }
    const writes = s.writes;
    writes.add(payload.length, () =>
      s.disk.applyDelta({ index, delta: payload, digest }).then(
        () => {
          bytesWritten(payload.length);
          conn.release(payload);
        },
        (error: unknown) => {
          if (!isDamage(error)) throw error;
          // The delta did not rebuild the block: the replica no longer holds its base (or the
          // delta arrived damaged). Resending the delta would fail the same way: ask for the block.
          throw new TransportError(
            `the delta of block ${index} of disk ${s.disk.disk.id} did not rebuild the block (the replica no longer holds its base, or it arrived damaged); the source resends it whole`,
            { details: { index, resendWhole: { stream: message.stream, index } }, cause: error },
          );
        },
      ),
    );
    s.end = index + 1;
    return writes.full ? writes.room().then(() => true as const) : true;
  };

  /** A stream's write lane; its failure (a damaged block, a failed write) ends the connection at once. */
  const lane = (): WriteLane => {
    const writes = new WriteLane(WRITE_DEPTH, WRITE_QUEUE_BYTES);
    writes.onFail = (error) => {
      if (!conn.error) conn.abort(asReplikit(error), abortOptions(error));
    };
    return writes;
  };

  const handleControl = async (message: Message): Promise<boolean> => {
    switch (message.type) {
      case 'open-disk': {
        if (streams.has(message.stream)) throw new ProtocolError(`stream ${message.stream} is already open`);
        if (streams.size >= 64) throw new ProtocolError('more than 64 disks open in one session');
        // The session's run id goes with every writer: the target refuses it while another run
        // holds the replica, and never continues writes another run left pending.
        const disk = await target.openDisk(spec!.replica, message.disk, spec!.blockSize, spec!.digest, {
          runId: spec!.runId,
        });
        streams.set(message.stream, {
          disk,
          end: 0,
          digestWork: Promise.resolve(),
          writes: lane(),
          flushes: Promise.resolve(),
        });
        conn.send({ type: 'disk-opened', stream: message.stream, blockCount: disk.blockCount });
        return true;
      }
      case 'close-disk': {
        const s = stream(message.stream);
        await s.digestWork;
        await s.digests?.iterator.return?.();
        await s.writes.settled();
        await s.flushes;
        await s.disk.flush();
        await s.disk.close();
        streams.delete(message.stream);
        conn.send({ type: 'disk-closed', stream: message.stream, bytesWritten: s.disk.bytesWritten });
        return true;
      }
      case 'commit': {
        for (const [id, s] of streams) {
          await s.digestWork;
          await s.writes.settled();
          await s.flushes;
          await s.disk.flush();
          await s.disk.close();
          streams.delete(id);
        }
        result.committed = true;
        conn.send({ type: 'committed' });
        return false;
      }
      default:
        throw new ProtocolError(`unexpected '${message.type}' frame on the target side`);
    }
  };

  /**
   * Reads and applies frames until the session commits, the agent stops or the connection fails.
   * Kept apart and small: it is the hot loop, and the JIT compiles it alone.
   */
  const readFrames = async (): Promise<void> => {
    for (;;) {
      if (stopping?.aborted) return;
      // A queued frame is taken at once; only an empty queue costs a wait.
      const next = conn.poll() ?? (await conn.nextOrInterrupt());
      if (next === undefined) return;
      const handled = handle(next);
      if (handled === true) continue;
      if (handled === false || !(await handled)) return;
    }
  };

  try {
    const session = options.first ? sessionFrame(options.first) : await conn.expect('session');
    spec = session.spec;
    hasher = await hasherFor(spec.digest);
    result.sessionId = session.sessionId;
    result.runId = spec.runId;
    await options.onSession?.(session.sessionId, spec);
    conn.setMaxBlockPayload(BLOCK_FIXED_BYTES + MAX_DIGEST_BYTES + spec.blockSize);
    arena = arenaFor(spec.blockSize, options.arenas, hasher);
    conn.useArena(arena);
    const used = arena;
    // Back to the pool only once the connection is closed: no late frame can land in it then.
    if (used && options.arenas) void conn.closed.then(() => options.arenas!.give(used));
    conn.send({ type: 'session-ok', sessionId: session.sessionId });
    await readFrames();
    if (stopping?.aborted && !result.committed) {
      // Graceful stop: everything applied is made durable and acked before the connection ends.
      for (const [id, s] of streams) {
        await s.writes.settled();
        await s.flushes.catch(() => undefined);
        await s.disk.flush();
        conn.send({ type: 'ack', stream: id, end: s.end });
      }
      const error = new TransportError('the agent is shutting down; reconnect to another or wait for its restart');
      result.error = error;
      conn.abort(error, { retry: true });
    }
  } catch (error) {
    const failure = asReplikit(error);
    result.error = conn.error ?? failure;
    // A damaged block is the link's fault: the source resends it on a new connection.
    if (!conn.error) conn.abort(failure, { retry: isDamage(failure) });
  } finally {
    stopping?.removeEventListener('abort', onStop);
    for (const s of streams.values()) {
      await s.writes.idle();
      await s.flushes.catch(() => undefined);
      await s.digestWork.catch(() => undefined);
      await s.digests?.iterator.return?.().catch(() => undefined);
      await s.disk.close().catch(() => undefined);
    }
    streams.clear();
  }
  return result;
}

/** How many digests the source asks for at a time. */
export const DIGEST_BATCH = Math.min(1024, MAX_DIGESTS_PER_FRAME);
