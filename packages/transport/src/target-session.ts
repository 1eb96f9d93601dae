import {
  type BlockDigest,
  type BlockHasher,
  type BlockOp,
  type BlockTarget,
  createNodeHasher,
  isReplikitError,
  ReplikitError,
  type SessionSpec,
  sameDigest,
  type TargetDisk,
  TransportError,
} from '@replikit/core';
import { codecById } from './codecs.js';
import type { FrameConnection } from './connection.js';
import { HashBatcher } from './hash-batcher.js';
import type { AnyHasherFactory } from './hasher.js';
import { BLOCK_FIXED_BYTES, MAX_DIGEST_BYTES, MAX_DIGESTS_PER_FRAME } from './protocol/constants.js';
import type { DigestsRequestMessage, Message } from './protocol/messages.js';
import { ProtocolError } from './protocol/protocol-error.js';

/** One open replica disk of a session on the target side. */
interface TargetStream {
  disk: TargetDisk;
  /** Operations below this block were applied on this connection. */
  end: number;
  /** Replica digests being read for the source, kept open between requests. */
  digests?: { iterator: AsyncIterator<BlockDigest>; next: number };
  /** Serializes digest requests of this stream. */
  digestWork: Promise<void>;
  /** Writes of verified blocks, in order; the next block is decoded and checked meanwhile. */
  writes: Promise<void>;
  /** Bytes queued in `writes`. */
  queued: number;
  /** Flushes and their acks, in order; they run beside the reading of later blocks. */
  flushes: Promise<void>;
}

/** Verified bytes a stream may queue for writing before the reader waits for the writer. */
const WRITE_QUEUE_BYTES = 8 * 1024 * 1024;

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
}

/** A block that arrived damaged (its digest or its compressed data): worth a resend. */
function isDamage(error: unknown): boolean {
  return isReplikitError(error, 'E_TRANSPORT') && typeof error.details.index === 'number';
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
  let onStop = () => {};
  const stopped = new Promise<undefined>((resolve) => {
    onStop = () => resolve(undefined);
    if (stopping?.aborted) resolve(undefined);
    stopping?.addEventListener('abort', onStop, { once: true });
  });

  const hasherFor = options.hasher ?? createNodeHasher;
  let hasher!: BlockHasher;
  let batcher!: HashBatcher;

  /** Chains a write behind the stream's earlier ones; waits when too much is queued. */
  const queueWrite = async (
    s: TargetStream,
    op: BlockOp,
    bytes: number,
    done?: () => void,
    verify?: () => Promise<void>,
  ): Promise<void> => {
    s.queued += bytes;
    s.writes = s.writes.then(async () => {
      await verify?.();
      await s.disk.apply(op);
      s.queued -= bytes;
      result.bytesWritten += bytes;
      done?.();
    });
    // A failed write is seen at the next wait on `writes` (and nothing after it is written).
    s.writes.catch(() => undefined);
    if (s.queued > WRITE_QUEUE_BYTES) await s.writes;
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

  const handle = async (message: Message): Promise<boolean> => {
    switch (message.type) {
      case 'open-disk': {
        if (streams.has(message.stream)) throw new ProtocolError(`stream ${message.stream} is already open`);
        if (streams.size >= 64) throw new ProtocolError('more than 64 disks open in one session');
        const disk = await target.openDisk(spec!.replica, message.disk, spec!.blockSize, spec!.digest);
        streams.set(message.stream, {
          disk,
          end: 0,
          digestWork: Promise.resolve(),
          writes: Promise.resolve(),
          queued: 0,
          flushes: Promise.resolve(),
        });
        conn.send({ type: 'disk-opened', stream: message.stream, blockCount: disk.blockCount });
        return true;
      }
      case 'block': {
        const s = stream(message.stream);
        if (message.index < s.end) throw new ProtocolError(`block ${message.index} arrived out of order`);
        if (message.rawLength > spec!.blockSize) throw new ProtocolError(`block of ${message.rawLength} bytes`);
        let data = message.payload;
        if (message.compressed) {
          const codec = codecById(message.codec);
          try {
            data = codec.decode(message.payload, message.rawLength);
          } catch (error) {
            // The frame check passed, so only the data can be damaged: the digest's domain.
            throw new TransportError(`block ${message.index} arrived damaged (${(error as Error).message})`, {
              details: { index: message.index },
            });
          }
        }
        if (message.digest.length === 0) throw new ProtocolError(`block ${message.index} carries no digest`);
        if (message.digest.length !== hasher.digestLength) {
          throw new ProtocolError(`block ${message.index} carries a ${message.digest.length}-byte digest`);
        }
        // The digest is computed now (on the hasher's threads when it has some) and checked in
        // the write queue, right before the write: nothing unverified is ever written, and
        // the next blocks are read and hashed meanwhile.
        const index = message.index;
        const expected = Uint8Array.from(message.digest);
        const verified = batcher.hash(data);
        verified.catch(() => undefined);
        const verify = async () => {
          const actual = await verified;
          if (!actual || !sameDigest(actual, expected)) {
            throw new TransportError(`block ${index} of disk ${s.disk.disk.id} arrived damaged (digest mismatch)`, {
              details: { index },
            });
          }
        };
        // The frame's memory goes back to the decoder once nothing refers to it any more.
        if (data !== message.payload) conn.release(message.payload);
        await queueWrite(s, { kind: 'data', index, data }, data.length, () => conn.release(data), verify);
        s.end = message.index + 1;
        return true;
      }
      case 'zero': {
        const s = stream(message.stream);
        if (message.index < s.end) throw new ProtocolError(`zero run at ${message.index} arrived out of order`);
        await queueWrite(s, { kind: 'zero', index: message.index, count: message.count }, 0);
        s.end = message.index + message.count;
        return true;
      }
      case 'flush': {
        const s = stream(message.stream);
        // Everything accepted so far is written, made durable and acked while reading goes on.
        const end = s.end;
        const written = s.writes;
        s.flushes = s.flushes.then(async () => {
          await written;
          await s.disk.flush();
          if (!conn.error) conn.send({ type: 'ack', stream: message.stream, end });
        });
        s.flushes.catch((error: unknown) => conn.abort(asReplikit(error), { retry: isDamage(error) }));
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
      case 'close-disk': {
        const s = stream(message.stream);
        await s.digestWork;
        await s.digests?.iterator.return?.();
        await s.writes;
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
          await s.writes;
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

  try {
    const session = await conn.expect('session');
    spec = session.spec;
    hasher = await hasherFor(spec.digest);
    batcher = new HashBatcher(hasher);
    result.sessionId = session.sessionId;
    result.runId = spec.runId;
    await options.onSession?.(session.sessionId, spec);
    conn.setMaxBlockPayload(BLOCK_FIXED_BYTES + MAX_DIGEST_BYTES + spec.blockSize);
    conn.send({ type: 'session-ok', sessionId: session.sessionId });
    for (;;) {
      if (stopping?.aborted) break;
      const next = await Promise.race([conn.next(), stopped]);
      if (next === undefined) break;
      if (!(await handle(next))) break;
    }
    if (stopping?.aborted && !result.committed) {
      // Graceful stop: everything applied is made durable and acked before the connection ends.
      for (const [id, s] of streams) {
        await s.writes;
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
      await s.writes.catch(() => undefined);
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
