import type { BlockArena } from './block-arena.js';
import {
  BLOCK_FIXED_BYTES,
  CONTROL_TYPES,
  FIXED_PAYLOAD,
  FRAME_MAGIC,
  FrameType,
  HEADER_BYTES,
  MAX_CONTROL_PAYLOAD,
  MAX_DIGEST_BYTES,
  PROTOCOL_VERSION,
} from './constants.js';
import { copyBytes } from './copy-bytes.js';
import { crc32 } from './crc32.js';
import { coveredLength } from './frame-check.js';
import { DamagedFrameError, ProtocolError } from './protocol-error.js';

/** One frame as cut from the byte stream: its type and payload (not yet parsed). */
export interface RawFrame {
  /** Frame type number. */
  type: number;
  /**
   * The payload. For a `block` frame cut by the {@link FrameDecoder}, only its fixed part and
   * digest: the block's bytes are in `data`.
   */
  payload: Uint8Array;
  /**
   * A `block` frame's data (raw or compressed), kept apart from its fixed part so that it can
   * land in a {@link BlockArena} slot. When absent, the data follows the digest in `payload`.
   */
  data?: Uint8Array;
}

const KNOWN_TYPES = new Set<number>(Object.values(FrameType));

/** The largest payload a frame of `type` may have, given the current bound of block frames. */
export function payloadBound(type: number, maxBlockPayload: number, maxResponsePayload = MAX_CONTROL_PAYLOAD): number {
  if (type === FrameType.response) return maxResponsePayload;
  if (CONTROL_TYPES.has(type)) return MAX_CONTROL_PAYLOAD;
  const fixed = FIXED_PAYLOAD.get(type);
  if (fixed !== undefined) return fixed;
  if (type === FrameType.block) return maxBlockPayload;
  if (type === FrameType.digests) return MAX_CONTROL_PAYLOAD * 5;
  return 0;
}

/** What the decoder reads next: the 16-byte header, */
const HEADER = 0;
/** the payload of a frame other than `block`, */
const BODY = 1;
/** a `block` frame's fixed part and digest (what the body check covers), */
const BLOCK_HEAD = 2;
/** or a `block` frame's data. */
const BLOCK_DATA = 3;

/**
 * Cuts a byte stream into frames. It never trusts a length: the header is checked (magic,
 * version, known type, payload length within the type's bound) before a byte of payload is
 * buffered, so it holds at most one frame's bound in memory. A `block` frame's fixed part and
 * digest are checked (body check, digest length) before its data is buffered, and the data goes
 * into a slot of the {@link BlockArena} when one is set (see {@link FrameDecoder.useArena}).
 * Any violation throws a {@link ProtocolError} and the decoder refuses further input.
 */
export class FrameDecoder {
  private readonly header = new Uint8Array(HEADER_BYTES);
  private readonly headerView = new DataView(this.header.buffer);
  /** A block frame's fixed part and digest, gathered before its data. */
  private readonly blockHead = new Uint8Array(BLOCK_FIXED_BYTES + MAX_DIGEST_BYTES);
  private state = HEADER;
  /** Bytes of the current part (header, payload, block head or block data) read so far. */
  private fill = 0;
  /** Bytes of the current part. */
  private need = HEADER_BYTES;
  private type = 0;
  private length = 0;
  private bodyCheck = 0;
  private target: Uint8Array | undefined;
  private blockHeadBytes = 0;
  private failed = false;
  private arena: BlockArena | undefined;
  /** Bytes currently buffered for an incomplete frame. */
  buffered = 0;

  /**
   * @param maxBlockPayload - Bound of a `block` frame's payload; raise it with
   * {@link FrameDecoder.setMaxBlockPayload} once the session's block size is known.
   */
  constructor(private maxBlockPayload = MAX_CONTROL_PAYLOAD) {}

  private maxResponsePayload = MAX_CONTROL_PAYLOAD;

  /** Sets the bound of `block` frames (fixed part + digest + block size). */
  setMaxBlockPayload(bytes: number): void {
    this.maxBlockPayload = bytes;
  }

  /** Sets the bound of `response` frames (raised by a reader that authenticated its peer). */
  setMaxResponsePayload(bytes: number): void {
    this.maxResponsePayload = bytes;
  }

  /** Reads the data of later `block` frames into `arena`'s slots while it has free ones. */
  useArena(arena: BlockArena | undefined): void {
    this.arena = arena;
  }

  /**
   * Hands a block's data back once the caller is done with it (written, decoded), so that a
   * later frame reuses its arena slot. Data outside the arena is ignored.
   */
  release(data: Uint8Array): void {
    this.arena?.release(data);
  }

  /** True when no partial frame is buffered. */
  get idle(): boolean {
    return this.state === HEADER && this.fill === 0;
  }

  /** Feeds received bytes; returns the frames they complete, in order. */
  push(chunk: Uint8Array): RawFrame[] {
    if (this.failed) throw new ProtocolError('the stream already broke the protocol');
    const frames: RawFrame[] = [];
    let at = 0;
    try {
      while (at < chunk.length) {
        if (this.state === HEADER) {
          // Fast path: a whole frame other than a block inside this chunk, no copy.
          if (this.fill === 0 && chunk.length - at >= HEADER_BYTES) {
            const view = new DataView(chunk.buffer, chunk.byteOffset + at, HEADER_BYTES);
            const length = this.checkHeader(view, chunk.subarray(at, at + 12));
            if (this.type !== FrameType.block && chunk.length - at - HEADER_BYTES >= length) {
              const payload = chunk.subarray(at + HEADER_BYTES, at + HEADER_BYTES + length);
              this.checkBody(payload);
              frames.push({ type: this.type, payload });
              at += HEADER_BYTES + length;
              continue;
            }
            at += HEADER_BYTES;
            this.startPayload(length);
            this.advance(frames);
            continue;
          }
          const take = Math.min(HEADER_BYTES - this.fill, chunk.length - at);
          this.header.set(chunk.subarray(at, at + take), this.fill);
          this.fill += take;
          at += take;
          if (this.fill < HEADER_BYTES) break;
          this.startPayload(this.checkHeader(this.headerView, this.header.subarray(0, 12)));
          this.advance(frames);
          continue;
        }
        const take = Math.min(this.need - this.fill, chunk.length - at);
        copyBytes(this.target!, this.fill, chunk.subarray(at, at + take));
        this.fill += take;
        at += take;
        if (this.fill < this.need) break;
        this.advance(frames);
      }
    } catch (error) {
      this.failed = true;
      this.target = undefined;
      this.buffered = 0;
      throw error;
    }
    this.buffered = this.state === HEADER ? this.fill : this.blockHeadBytes + this.fill;
    return frames;
  }

  /** Completes the parts that are complete (an empty one is complete at once). */
  private advance(frames: RawFrame[]): void {
    while (this.state !== HEADER && this.fill >= this.need) {
      const frame = this.partDone();
      if (frame) frames.push(frame);
    }
  }

  /** The header checked out: gets ready for the payload of `length` bytes. */
  private startPayload(length: number): void {
    this.length = length;
    this.fill = 0;
    this.blockHeadBytes = 0;
    if (this.type === FrameType.block && length >= BLOCK_FIXED_BYTES) {
      this.state = BLOCK_HEAD;
      this.target = this.blockHead;
      this.need = BLOCK_FIXED_BYTES;
    } else {
      this.state = BODY;
      this.target = new Uint8Array(length);
      this.need = length;
    }
  }

  /** The current part is complete: returns the frame it ends, if it ends one. */
  private partDone(): RawFrame | undefined {
    if (this.state === BODY) {
      const payload = this.target!;
      this.checkBody(payload);
      this.reset();
      return { type: this.type, payload };
    }
    if (this.state === BLOCK_HEAD) {
      if (this.need === BLOCK_FIXED_BYTES) {
        // The fixed part is in: its digest length says how much more the body check covers.
        const digestLength = this.blockHead[14]!;
        if (digestLength > MAX_DIGEST_BYTES) throw new ProtocolError(`block digest of ${digestLength} bytes`);
        if (BLOCK_FIXED_BYTES + digestLength > this.length) {
          throw new ProtocolError(`block frame of ${this.length} bytes cannot hold a ${digestLength}-byte digest`);
        }
        if (digestLength > 0) {
          this.need = BLOCK_FIXED_BYTES + digestLength;
          return undefined;
        }
      }
      // Fixed part and digest are in: check them before a byte of data is buffered.
      const head = this.blockHead.subarray(0, this.need);
      this.checkBody(head);
      this.blockHeadBytes = this.need;
      const dataLength = this.length - this.need;
      this.state = BLOCK_DATA;
      this.fill = 0;
      this.need = dataLength;
      this.target = this.arena?.take(dataLength) ?? new Uint8Array(dataLength);
      return undefined;
    }
    // BLOCK_DATA
    const frame = { type: this.type, payload: this.blockHead.slice(0, this.blockHeadBytes), data: this.target! };
    this.reset();
    return frame;
  }

  private reset(): void {
    this.state = HEADER;
    this.fill = 0;
    this.need = HEADER_BYTES;
    this.target = undefined;
    this.blockHeadBytes = 0;
  }

  private checkHeader(view: DataView, first12: Uint8Array): number {
    const magic = view.getUint16(0, false);
    if (magic !== FRAME_MAGIC) {
      const first = view.getUint8(0);
      const hint = first === 0x15 || first === 0x16 ? ' (TLS records: one end uses TLS, the other plain TCP)' : '';
      throw new ProtocolError(`not a replikit frame (magic 0x${magic.toString(16).padStart(4, '0')})${hint}`);
    }
    if (crc32(first12) !== view.getUint32(12, false)) throw new DamagedFrameError('a frame header arrived damaged');
    const version = view.getUint8(2);
    if (version !== PROTOCOL_VERSION) {
      throw new ProtocolError(`frame of protocol version ${version}; this side speaks version ${PROTOCOL_VERSION}`, {
        version,
      });
    }
    const type = view.getUint8(3);
    if (!KNOWN_TYPES.has(type)) throw new ProtocolError(`unknown frame type ${type}`, { type });
    const length = view.getUint32(4, false);
    const bound = payloadBound(type, this.maxBlockPayload, this.maxResponsePayload);
    const fixed = FIXED_PAYLOAD.get(type);
    if (length > bound || (fixed !== undefined && length !== fixed)) {
      throw new ProtocolError(`frame of type ${type} claims ${length} bytes of payload; the bound is ${bound}`, {
        type,
        length,
      });
    }
    this.type = type;
    this.bodyCheck = view.getUint32(8, false);
    return length;
  }

  private checkBody(payload: Uint8Array): void {
    const covered = payload.subarray(0, coveredLength(this.type, payload));
    if (crc32(covered) !== this.bodyCheck) {
      throw new DamagedFrameError(`a frame of type ${this.type} arrived damaged`, { type: this.type });
    }
  }
}
