import { type DiskRef, ERROR_CODES, type ErrorCode, type SessionSpec } from '@replikit/core';
import { ByteCursor, writeU64 } from './byte-cursor.js';
import {
  BLOCK_FIXED_BYTES,
  BLOCK_FLAG_COMPRESSED,
  BLOCK_FLAG_DELTA,
  FRAME_MAGIC,
  FrameType,
  HEADER_BYTES,
  MAX_BLOCK_SIZE,
  MAX_CONTROL_PAYLOAD,
  MAX_DIGEST_BYTES,
  MAX_DIGESTS_PER_FRAME,
  MAX_FEATURES,
  MAX_RESPONSE_PAYLOAD,
  PROTOCOL_VERSION,
} from './constants.js';
import { crc32 } from './crc32.js';
import { coveredLength } from './frame-check.js';
import type { RawFrame } from './frame-decoder.js';
import { ProtocolError } from './protocol-error.js';

/** Which end of a session a peer plays: the source sends blocks, the target writes them. */
export type Role = 'source' | 'target';

/** The first frame each side sends. */
export interface HelloMessage {
  type: 'hello';
  /** Always `replikit-blocks`. */
  protocol: string;
  /** Lowest and highest protocol versions the sender speaks. */
  versions: [number, number];
  role: Role;
  /** 32 random bytes, hex: the challenge for a key proof. */
  nonce: string;
  /** Codec names the sender can decode/encode. */
  codecs: string[];
  /**
   * Optional protocol features the sender supports (absent: none). A target that lists `delta`
   * applies delta blocks.
   */
  features?: string[];
  /** The listener's key proof (plain TCP with a key only), hex. */
  proof?: string;
}

/** The dialer's key proof (plain TCP with a key only). */
export interface AuthMessage {
  type: 'auth';
  proof: string;
}

/** Source ─► target: what the session is about. `resume` is set on a reconnect. */
export interface SessionMessage {
  type: 'session';
  sessionId: string;
  spec: SessionSpec;
  resume: boolean;
  /** The codec the source will use for compressed blocks (`none` when it never compresses). */
  codec: string;
}

/** Target ─► source: the session is open. */
export interface SessionOkMessage {
  type: 'session-ok';
  sessionId: string;
}

/** Source ─► target: open replica disk `disk` as stream `stream`. */
export interface OpenDiskMessage {
  type: 'open-disk';
  stream: number;
  disk: DiskRef;
}

/** Target ─► source: the stream is open. */
export interface DiskOpenedMessage {
  type: 'disk-opened';
  stream: number;
  blockCount: number;
}

/** Source ─► target: one data block. */
export interface BlockMessage {
  type: 'block';
  stream: number;
  index: number;
  /** Codec id of the payload when `compressed`. */
  codec: number;
  compressed: boolean;
  /**
   * The payload is a delta to apply to the replica's current block (core's block-delta format),
   * not the block itself; `rawLength` is the block's length and `digest` the digest of the block
   * once the delta is applied. Absent: false.
   */
  delta?: boolean;
  /** Length of the block once decoded. */
  rawLength: number;
  /** Digest of the decoded block (empty when not sent). */
  digest: Uint8Array;
  payload: Uint8Array;
}

/** Source ─► target: `count` blocks from `index` read as zero. */
export interface ZeroMessage {
  type: 'zero';
  stream: number;
  index: number;
  count: number;
}

/** Source ─► target: make everything received on the stream durable and ack it. */
export interface FlushMessage {
  type: 'flush';
  stream: number;
}

/** Target ─► source: every operation below block `end` is durable. */
export interface AckMessage {
  type: 'ack';
  stream: number;
  end: number;
}

/** Source ─► target: send the digests of up to `count` replica blocks from `from`. */
export interface DigestsRequestMessage {
  type: 'digests-request';
  stream: number;
  from: number;
  count: number;
}

/** Target ─► source: replica digests from `from` on (`null` for an all-zero block). */
export interface DigestsMessage {
  type: 'digests';
  stream: number;
  from: number;
  digests: Array<Uint8Array | null>;
  /** The disk ends after these. */
  last: boolean;
}

/** Source ─► target: flush and close the stream. */
export interface CloseDiskMessage {
  type: 'close-disk';
  stream: number;
}

/** Target ─► source: the stream is closed, everything durable. */
export interface DiskClosedMessage {
  type: 'disk-closed';
  stream: number;
  bytesWritten: number;
}

/** Source ─► target: the session is complete; close every stream. */
export interface CommitMessage {
  type: 'commit';
}

/** Target ─► source: everything of the session is durable and closed. */
export interface CommittedMessage {
  type: 'committed';
}

/** Either side: the session (or the connection) ends because of this error. */
export interface ErrorMessage {
  type: 'error';
  code: ErrorCode;
  message: string;
  /** The sender expects a reconnect to succeed (a damaged block, a restart). */
  retry: boolean;
  /**
   * Target ─► source: the delta of this block did not rebuild it (the replica no longer holds the
   * delta's base): send the block whole when resuming. Absent from older agents' frames.
   */
  resendWhole?: { stream: number; index: number };
}

/**
 * Source ─► target, on a target-control connection: run operation `op` of the agent's target
 * driver with `args`. Ids are chosen by the sender and echoed in the {@link ResponseMessage}.
 */
export interface RequestMessage {
  type: 'request';
  /** 0 to 2^32 − 1. */
  id: number;
  /** The operation's name (`ensureReplica`, `listRestorePoints`, …; see docs/protocol.md). */
  op: string;
  /** The operation's arguments by name. */
  args: Record<string, unknown>;
}

/** Target ─► source: the outcome of request `id`: `result` (JSON, `null` for none) or `error`. */
export interface ResponseMessage {
  type: 'response';
  id: number;
  /** Present when the operation succeeded. */
  result?: unknown;
  /** Present when it failed: the driver error's code and message. */
  error?: { code: ErrorCode; message: string };
}

/** Every message of the protocol. */
export type Message =
  | HelloMessage
  | AuthMessage
  | SessionMessage
  | SessionOkMessage
  | OpenDiskMessage
  | DiskOpenedMessage
  | BlockMessage
  | ZeroMessage
  | FlushMessage
  | AckMessage
  | DigestsRequestMessage
  | DigestsMessage
  | CloseDiskMessage
  | DiskClosedMessage
  | CommitMessage
  | CommittedMessage
  | ErrorMessage
  | RequestMessage
  | ResponseMessage;

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

function header(type: number, length: number, extra = 0): { bytes: Uint8Array; view: DataView } {
  const bytes = new Uint8Array(HEADER_BYTES + extra);
  const view = new DataView(bytes.buffer);
  view.setUint16(0, FRAME_MAGIC, false);
  view.setUint8(2, PROTOCOL_VERSION);
  view.setUint8(3, type);
  view.setUint32(4, length, false);
  return { bytes, view };
}

/** Fills in the body and header checks once the frame's first chunk holds what they cover. */
function seal(frame: Uint8Array[]): Uint8Array[] {
  const first = frame[0]!;
  const view = new DataView(first.buffer, first.byteOffset, first.byteLength);
  const type = view.getUint8(3);
  const payload = first.subarray(HEADER_BYTES);
  view.setUint32(8, crc32(payload.subarray(0, coveredLength(type, payload))), false);
  view.setUint32(12, crc32(first.subarray(0, 12)), false);
  return frame;
}

function controlFrame(type: number, body: Record<string, unknown>): Uint8Array[] {
  const json = encoder.encode(JSON.stringify(body));
  const bound = type === FrameType.response ? MAX_RESPONSE_PAYLOAD : MAX_CONTROL_PAYLOAD;
  if (json.length > bound) throw new ProtocolError(`control frame of ${json.length} bytes is too large`);
  const { bytes } = header(type, json.length, json.length);
  bytes.set(json, HEADER_BYTES);
  return [bytes];
}

function fixedFrame(type: number, length: number, fill: (view: DataView, at: number) => void): Uint8Array[] {
  const { bytes, view } = header(type, length, length);
  fill(view, HEADER_BYTES);
  return [bytes];
}

/**
 * Encodes a message as the byte chunks of one frame. A block's payload is returned as its own
 * chunk (no copy), so the caller should write the chunks together (corked).
 */
export function encodeMessage(message: Message): Uint8Array[] {
  return seal(encodeUnsealed(message));
}

function encodeUnsealed(message: Message): Uint8Array[] {
  switch (message.type) {
    case 'hello':
    case 'auth':
    case 'session':
    case 'session-ok':
    case 'open-disk':
    case 'disk-opened':
    case 'commit':
    case 'committed':
    case 'error':
    case 'request':
    case 'response': {
      const { type, ...body } = message;
      return controlFrame(CONTROL_TYPE_OF[type], body);
    }
    case 'block': {
      const fixed = BLOCK_FIXED_BYTES + message.digest.length;
      const { bytes, view } = header(FrameType.block, fixed + message.payload.length, fixed);
      const at = HEADER_BYTES;
      view.setUint32(at, message.stream, false);
      writeU64(view, at + 4, message.index);
      view.setUint8(at + 12, (message.compressed ? BLOCK_FLAG_COMPRESSED : 0) | (message.delta ? BLOCK_FLAG_DELTA : 0));
      view.setUint8(at + 13, message.codec);
      view.setUint8(at + 14, message.digest.length);
      view.setUint8(at + 15, 0);
      view.setUint32(at + 16, message.rawLength, false);
      bytes.set(message.digest, at + BLOCK_FIXED_BYTES);
      return [bytes, message.payload];
    }
    case 'zero':
      return fixedFrame(FrameType.zero, 20, (view, at) => {
        view.setUint32(at, message.stream, false);
        writeU64(view, at + 4, message.index);
        writeU64(view, at + 12, message.count);
      });
    case 'flush':
      return fixedFrame(FrameType.flush, 4, (view, at) => view.setUint32(at, message.stream, false));
    case 'close-disk':
      return fixedFrame(FrameType.closeDisk, 4, (view, at) => view.setUint32(at, message.stream, false));
    case 'ack':
      return fixedFrame(FrameType.ack, 12, (view, at) => {
        view.setUint32(at, message.stream, false);
        writeU64(view, at + 4, message.end);
      });
    case 'disk-closed':
      return fixedFrame(FrameType.diskClosed, 12, (view, at) => {
        view.setUint32(at, message.stream, false);
        writeU64(view, at + 4, message.bytesWritten);
      });
    case 'digests-request':
      return fixedFrame(FrameType.digestsRequest, 16, (view, at) => {
        view.setUint32(at, message.stream, false);
        writeU64(view, at + 4, message.from);
        view.setUint32(at + 12, message.count, false);
      });
    case 'digests': {
      const digestLength = message.digests.find((d) => d !== null)?.length ?? 0;
      const length = 18 + message.digests.reduce((sum, d) => sum + 1 + (d ? digestLength : 0), 0);
      return fixedFrame(FrameType.digests, length, (view, at) => {
        view.setUint32(at, message.stream, false);
        writeU64(view, at + 4, message.from);
        view.setUint32(at + 12, message.digests.length, false);
        view.setUint8(at + 16, digestLength);
        view.setUint8(at + 17, message.last ? 1 : 0);
        let p = at + 18;
        const out = new Uint8Array(view.buffer);
        for (const digest of message.digests) {
          view.setUint8(p++, digest ? 1 : 0);
          if (digest) {
            if (digest.length !== digestLength) throw new ProtocolError('digests of one frame differ in length');
            out.set(digest, p);
            p += digestLength;
          }
        }
      });
    }
  }
}

const CONTROL_TYPE_OF = {
  hello: FrameType.hello,
  auth: FrameType.auth,
  session: FrameType.session,
  'session-ok': FrameType.sessionOk,
  'open-disk': FrameType.openDisk,
  'disk-opened': FrameType.diskOpened,
  commit: FrameType.commit,
  committed: FrameType.committed,
  error: FrameType.error,
  request: FrameType.request,
  response: FrameType.response,
} as const;

// ── parsing ─────────────────────────────────────────────────────────────────────────────────

type Json = Record<string, unknown>;

function parseJson(payload: Uint8Array, what: string): Json {
  let value: unknown;
  try {
    value = JSON.parse(decoder.decode(payload));
  } catch {
    throw new ProtocolError(`${what} frame is not valid UTF-8 JSON`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ProtocolError(`${what} frame is not a JSON object`);
  }
  return value as Json;
}

function str(body: Json, key: string, what: string, max = 4096): string {
  const value = body[key];
  if (typeof value !== 'string' || value.length > max) throw new ProtocolError(`${what}.${key} must be a string`);
  return value;
}

function int(body: Json, key: string, what: string, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  const value = body[key];
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    throw new ProtocolError(`${what}.${key} must be an integer from ${min} to ${max}`);
  }
  return value;
}

function obj(body: Json, key: string, what: string): Json {
  const value = body[key];
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ProtocolError(`${what}.${key} must be an object`);
  }
  return value as Json;
}

function diskRefOf(value: Json, what: string): DiskRef {
  str(value, 'id', what);
  str(value, 'vmId', what);
  int(value, 'size', what);
  return value as unknown as DiskRef;
}

function sessionSpecOf(value: Json): SessionSpec {
  str(value, 'runId', 'session.spec');
  const blockSize = int(value, 'blockSize', 'session.spec', 512, MAX_BLOCK_SIZE);
  if ((blockSize & (blockSize - 1)) !== 0) throw new ProtocolError('session.spec.blockSize must be a power of two');
  str(value, 'digest', 'session.spec', 32);
  const replica = obj(value, 'replica', 'session.spec');
  str(replica, 'id', 'session.spec.replica');
  str(replica, 'name', 'session.spec.replica');
  if (!Array.isArray(replica.disks)) throw new ProtocolError('session.spec.replica.disks must be an array');
  for (const disk of replica.disks) {
    if (typeof disk !== 'object' || disk === null)
      throw new ProtocolError('session.spec.replica.disks has a non-object');
    diskRefOf(disk as Json, 'session.spec.replica.disks[]');
  }
  return value as unknown as SessionSpec;
}

/** The codes a peer's error may carry: core's, so a code added there crosses the wire unchanged. */
const KNOWN_CODES: ReadonlySet<string> = new Set(ERROR_CODES);

/** A `response` body: an id and exactly one of `result` and `error` (a known code, else `E_TRANSPORT`). */
function parseResponse(body: Json): ResponseMessage {
  const id = int(body, 'id', 'response', 0, 0xffffffff);
  const hasResult = Object.hasOwn(body, 'result');
  if (hasResult === (body.error !== undefined)) throw new ProtocolError('response must carry either result or error');
  if (hasResult) return { type: 'response', id, result: body.result };
  const error = obj(body, 'error', 'response');
  const code = str(error, 'code', 'response.error', 32);
  return {
    type: 'response',
    id,
    error: {
      code: (KNOWN_CODES.has(code) ? code : 'E_TRANSPORT') as ErrorCode,
      message: str(error, 'message', 'response.error', 4096),
    },
  };
}

/**
 * Parses a `block` frame cut by the {@link FrameDecoder} (the hot path of a session, apart from
 * {@link parseFrame} so that it stays small); throws {@link ProtocolError}.
 */
export function parseBlockFrame(frame: RawFrame): BlockMessage {
  const p = frame.payload;
  // The usual case: the decoder handed the data apart and the head holds exactly the fixed part
  // and the digest. Read without a cursor (no DataView per block); anything else takes the
  // general path, which also words the errors.
  if (frame.data === undefined || p.length < BLOCK_FIXED_BYTES || p.length !== BLOCK_FIXED_BYTES + p[14]!) {
    return parseBlockFrameWithCursor(frame);
  }
  const index = u32At(p, 4) * 2 ** 32 + u32At(p, 8);
  if (!Number.isSafeInteger(index)) throw new ProtocolError('block frame holds an integer beyond 2^53');
  checkBlockHead(p[12]!, p[14]!, p[15]!, u32At(p, 16));
  const digest = p.subarray(BLOCK_FIXED_BYTES, BLOCK_FIXED_BYTES + p[14]!);
  return blockMessage(u32At(p, 0), index, p[12]!, p[13]!, u32At(p, 16), digest, frame.data);
}

/** Checks a block frame's flags, reserved byte, digest length and block length; throws {@link ProtocolError}. */
function checkBlockHead(flags: number, digestLength: number, reserved: number, rawLength: number): void {
  if ((flags & ~(BLOCK_FLAG_COMPRESSED | BLOCK_FLAG_DELTA)) !== 0 || reserved !== 0)
    throw new ProtocolError('block frame has unknown flags');
  if (flags === (BLOCK_FLAG_COMPRESSED | BLOCK_FLAG_DELTA))
    throw new ProtocolError('block frame is both compressed and a delta');
  if (digestLength > MAX_DIGEST_BYTES) throw new ProtocolError(`block digest of ${digestLength} bytes`);
  if (rawLength < 1 || rawLength > MAX_BLOCK_SIZE) throw new ProtocolError(`block of ${rawLength} bytes`);
}

/** The block message, once its data's length agrees with the frame's head; throws {@link ProtocolError}. */
function blockMessage(
  stream: number,
  index: number,
  flags: number,
  codec: number,
  rawLength: number,
  digest: Uint8Array,
  data: Uint8Array,
): BlockMessage {
  const compressed = (flags & BLOCK_FLAG_COMPRESSED) !== 0;
  const delta = (flags & BLOCK_FLAG_DELTA) !== 0;
  if (!compressed && !delta && data.length !== rawLength) {
    throw new ProtocolError(`block ${index} carries ${data.length} bytes but says ${rawLength}`);
  }
  if (compressed && data.length >= rawLength) throw new ProtocolError(`compressed block ${index} is not smaller`);
  if (delta && (data.length === 0 || data.length >= rawLength)) {
    throw new ProtocolError(`the delta of block ${index} holds ${data.length} bytes, not 1 to ${rawLength - 1}`);
  }
  return { type: 'block', stream, index, codec, compressed, delta, rawLength, digest, payload: data };
}

/** The big-endian 32-bit unsigned integer at `at` of `bytes` (which holds it). */
function u32At(bytes: Uint8Array, at: number): number {
  return ((bytes[at]! << 24) | (bytes[at + 1]! << 16) | (bytes[at + 2]! << 8) | bytes[at + 3]!) >>> 0;
}

/** {@link parseBlockFrame} for any payload, every field read through a bounds-checked cursor. */
function parseBlockFrameWithCursor(frame: RawFrame): BlockMessage {
  const payload = frame.payload;
  const cursor = new ByteCursor(payload, 'block');
  const stream = cursor.u32();
  const index = cursor.u64();
  const flags = cursor.u8();
  const codec = cursor.u8();
  const digestLength = cursor.u8();
  const reserved = cursor.u8();
  const rawLength = cursor.u32();
  checkBlockHead(flags, digestLength, reserved, rawLength);
  const digest = cursor.bytesOf(digestLength);
  // The decoder hands the data apart (it may lie in an arena slot); otherwise it follows.
  const data = frame.data ?? cursor.bytesOf(cursor.remaining);
  if (frame.data) cursor.end();
  return blockMessage(stream, index, flags, codec, rawLength, digest, data);
}

/** Parses a frame cut by the {@link FrameDecoder} into a message; throws {@link ProtocolError}. */
export function parseFrame(frame: RawFrame): Message {
  const { type, payload } = frame;
  switch (type) {
    case FrameType.hello: {
      const body = parseJson(payload, 'hello');
      const versions = body.versions;
      if (
        !Array.isArray(versions) ||
        versions.length !== 2 ||
        !versions.every((v) => Number.isSafeInteger(v) && v >= 0 && v <= 255)
      ) {
        throw new ProtocolError('hello.versions must be [lowest, highest]');
      }
      const role = str(body, 'role', 'hello');
      if (role !== 'source' && role !== 'target') throw new ProtocolError(`hello.role '${role}' is not source/target`);
      const codecs = body.codecs;
      if (
        !Array.isArray(codecs) ||
        codecs.length > 32 ||
        !codecs.every((c) => typeof c === 'string' && c.length < 32)
      ) {
        throw new ProtocolError('hello.codecs must be a list of names');
      }
      const nonce = str(body, 'nonce', 'hello', 128);
      const proof = body.proof === undefined ? undefined : str(body, 'proof', 'hello', 128);
      const features = body.features;
      if (
        features !== undefined &&
        (!Array.isArray(features) ||
          features.length > MAX_FEATURES ||
          !features.every((f) => typeof f === 'string' && f.length < 32))
      ) {
        throw new ProtocolError('hello.features must be a list of names');
      }
      return {
        type: 'hello',
        protocol: str(body, 'protocol', 'hello', 64),
        versions: [versions[0] as number, versions[1] as number],
        role,
        nonce,
        codecs: codecs as string[],
        ...(features !== undefined ? { features: features as string[] } : {}),
        ...(proof !== undefined ? { proof } : {}),
      };
    }
    case FrameType.auth:
      return { type: 'auth', proof: str(parseJson(payload, 'auth'), 'proof', 'auth', 128) };
    case FrameType.session: {
      const body = parseJson(payload, 'session');
      if (typeof body.resume !== 'boolean') throw new ProtocolError('session.resume must be a boolean');
      return {
        type: 'session',
        sessionId: str(body, 'sessionId', 'session', 128),
        spec: sessionSpecOf(obj(body, 'spec', 'session')),
        resume: body.resume,
        codec: str(body, 'codec', 'session', 32),
      };
    }
    case FrameType.sessionOk:
      return { type: 'session-ok', sessionId: str(parseJson(payload, 'session-ok'), 'sessionId', 'session-ok', 128) };
    case FrameType.openDisk: {
      const body = parseJson(payload, 'open-disk');
      return {
        type: 'open-disk',
        stream: int(body, 'stream', 'open-disk', 0, 0xffffffff),
        disk: diskRefOf(obj(body, 'disk', 'open-disk'), 'open-disk.disk'),
      };
    }
    case FrameType.diskOpened: {
      const body = parseJson(payload, 'disk-opened');
      return {
        type: 'disk-opened',
        stream: int(body, 'stream', 'disk-opened', 0, 0xffffffff),
        blockCount: int(body, 'blockCount', 'disk-opened'),
      };
    }
    case FrameType.commit:
      parseJson(payload, 'commit');
      return { type: 'commit' };
    case FrameType.committed:
      parseJson(payload, 'committed');
      return { type: 'committed' };
    case FrameType.error: {
      const body = parseJson(payload, 'error');
      const code = str(body, 'code', 'error', 32);
      return {
        type: 'error',
        code: (KNOWN_CODES.has(code) ? code : 'E_TRANSPORT') as ErrorCode,
        message: str(body, 'message', 'error', 4096),
        retry: body.retry === true,
        ...(body.resendWhole !== undefined ? { resendWhole: parseResendWhole(body) } : {}),
      };
    }
    case FrameType.request: {
      const body = parseJson(payload, 'request');
      return {
        type: 'request',
        id: int(body, 'id', 'request', 0, 0xffffffff),
        op: str(body, 'op', 'request', 64),
        args: obj(body, 'args', 'request'),
      };
    }
    case FrameType.response:
      return parseResponse(parseJson(payload, 'response'));
    case FrameType.block:
      return parseBlockFrame(frame);
    case FrameType.zero: {
      const cursor = new ByteCursor(payload, 'zero');
      const message: ZeroMessage = { type: 'zero', stream: cursor.u32(), index: cursor.u64(), count: cursor.u64() };
      cursor.end();
      if (message.count < 1) throw new ProtocolError('zero frame with a count of 0');
      return message;
    }
    case FrameType.flush:
    case FrameType.closeDisk: {
      const cursor = new ByteCursor(payload, 'stream');
      const stream = cursor.u32();
      cursor.end();
      return type === FrameType.flush ? { type: 'flush', stream } : { type: 'close-disk', stream };
    }
    case FrameType.ack: {
      const cursor = new ByteCursor(payload, 'ack');
      const message: AckMessage = { type: 'ack', stream: cursor.u32(), end: cursor.u64() };
      cursor.end();
      return message;
    }
    case FrameType.diskClosed: {
      const cursor = new ByteCursor(payload, 'disk-closed');
      const message: DiskClosedMessage = { type: 'disk-closed', stream: cursor.u32(), bytesWritten: cursor.u64() };
      cursor.end();
      return message;
    }
    case FrameType.digestsRequest: {
      const cursor = new ByteCursor(payload, 'digests-request');
      const message: DigestsRequestMessage = {
        type: 'digests-request',
        stream: cursor.u32(),
        from: cursor.u64(),
        count: cursor.u32(),
      };
      cursor.end();
      if (message.count < 1 || message.count > MAX_DIGESTS_PER_FRAME) {
        throw new ProtocolError(`digests-request for ${message.count} digests`);
      }
      return message;
    }
    case FrameType.digests: {
      const cursor = new ByteCursor(payload, 'digests');
      const stream = cursor.u32();
      const from = cursor.u64();
      const count = cursor.u32();
      const digestLength = cursor.u8();
      const last = cursor.u8();
      if (count > MAX_DIGESTS_PER_FRAME || digestLength > MAX_DIGEST_BYTES || last > 1) {
        throw new ProtocolError('digests frame out of bounds');
      }
      const digests: Array<Uint8Array | null> = [];
      for (let i = 0; i < count; i++) {
        const present = cursor.u8();
        if (present > 1) throw new ProtocolError('digests frame has a bad entry flag');
        digests.push(present ? cursor.bytesOf(digestLength) : null);
      }
      cursor.end();
      return { type: 'digests', stream, from, digests, last: last === 1 };
    }
    default:
      throw new ProtocolError(`unknown frame type ${type}`);
  }
}

/** The optional `resendWhole` of an `error` frame: a block of a stream. */
function parseResendWhole(body: Json): { stream: number; index: number } {
  const block = obj(body, 'resendWhole', 'error');
  return {
    stream: int(block, 'stream', 'error.resendWhole', 0, 0xffffffff),
    index: int(block, 'index', 'error.resendWhole'),
  };
}
