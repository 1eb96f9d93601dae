import {
  CONTROL_TYPES,
  FIXED_PAYLOAD,
  FRAME_MAGIC,
  FrameType,
  HEADER_BYTES,
  MAX_CONTROL_PAYLOAD,
  PROTOCOL_VERSION,
} from './constants.js';
import { crc32 } from './crc32.js';
import { coveredLength } from './frame-check.js';
import { DamagedFrameError, ProtocolError } from './protocol-error.js';

/** One frame as cut from the byte stream: its type and payload (not yet parsed). */
export interface RawFrame {
  /** Frame type number. */
  type: number;
  /** The payload; a view into the received bytes when the frame arrived in one chunk. */
  payload: Uint8Array;
}

const KNOWN_TYPES = new Set<number>(Object.values(FrameType));

/** Payload buffers kept for reuse. */
const POOL_SIZE = 256;

/** The largest payload a frame of `type` may have, given the current bound of block frames. */
export function payloadBound(type: number, maxBlockPayload: number): number {
  if (CONTROL_TYPES.has(type)) return MAX_CONTROL_PAYLOAD;
  const fixed = FIXED_PAYLOAD.get(type);
  if (fixed !== undefined) return fixed;
  if (type === FrameType.block) return maxBlockPayload;
  if (type === FrameType.digests) return MAX_CONTROL_PAYLOAD * 5;
  return 0;
}

/**
 * Cuts a byte stream into frames. It never trusts a length: the header is checked (magic,
 * version, known type, payload length within the type's bound) before a byte of payload is
 * buffered, so it holds at most one frame's bound in memory. Any violation throws a
 * {@link ProtocolError} and the decoder refuses further input.
 */
export class FrameDecoder {
  private readonly header = new Uint8Array(HEADER_BYTES);
  private headerFill = 0;
  private type = 0;
  private bodyCheck = 0;
  private payload: Uint8Array | undefined;
  private payloadLength = 0;
  private payloadFill = 0;
  private failed = false;
  /** Bytes currently buffered for an incomplete frame. */
  buffered = 0;
  /** Payload buffers handed back by {@link FrameDecoder.release}, ready for the next frames. */
  private readonly pool: ArrayBuffer[] = [];
  /** The buffers this decoder allocated (only those may come back to the pool). */
  private readonly owned = new WeakSet<ArrayBuffer>();

  /**
   * @param maxBlockPayload - Bound of a `block` frame's payload; raise it with
   * {@link FrameDecoder.setMaxBlockPayload} once the session's block size is known.
   */
  constructor(private maxBlockPayload = MAX_CONTROL_PAYLOAD) {}

  /** Sets the bound of `block` frames (fixed part + digest + block size). */
  setMaxBlockPayload(bytes: number): void {
    this.maxBlockPayload = bytes;
  }

  /** Feeds received bytes; returns the frames they complete, in order. */
  push(chunk: Uint8Array): RawFrame[] {
    if (this.failed) throw new ProtocolError('the stream already broke the protocol');
    const frames: RawFrame[] = [];
    let at = 0;
    try {
      while (at < chunk.length) {
        if (this.payload === undefined) {
          // Fast path: a whole frame inside this chunk, no copy.
          if (this.headerFill === 0 && chunk.length - at >= HEADER_BYTES) {
            const view = new DataView(chunk.buffer, chunk.byteOffset + at, HEADER_BYTES);
            const length = this.checkHeader(view);
            if (chunk.length - at - HEADER_BYTES >= length) {
              const payload = chunk.subarray(at + HEADER_BYTES, at + HEADER_BYTES + length);
              this.checkBody(payload);
              frames.push({ type: this.type, payload });
              at += HEADER_BYTES + length;
              continue;
            }
          }
          const take = Math.min(HEADER_BYTES - this.headerFill, chunk.length - at);
          this.header.set(chunk.subarray(at, at + take), this.headerFill);
          this.headerFill += take;
          at += take;
          if (this.headerFill < HEADER_BYTES) break;
          const length = this.checkHeader(new DataView(this.header.buffer, 0, HEADER_BYTES));
          this.payload = this.allocate(length);
          this.payloadLength = length;
          this.payloadFill = 0;
        }
        const take = Math.min(this.payloadLength - this.payloadFill, chunk.length - at);
        this.payload.set(chunk.subarray(at, at + take), this.payloadFill);
        this.payloadFill += take;
        at += take;
        if (this.payloadFill === this.payloadLength) {
          this.checkBody(this.payload);
          frames.push({ type: this.type, payload: this.payload });
          this.payload = undefined;
          this.headerFill = 0;
        }
      }
    } catch (error) {
      this.failed = true;
      this.payload = undefined;
      throw error;
    }
    this.buffered = this.headerFill + (this.payload ? this.payloadFill : 0);
    return frames;
  }

  /**
   * Hands a frame's payload back once the caller is done with it (written, decoded), so that a
   * later frame reuses its memory instead of allocating: a steady stream of 64 KiB blocks then
   * allocates nothing. Payloads the decoder did not allocate are ignored.
   */
  release(payload: Uint8Array): void {
    const buffer = payload.buffer as ArrayBuffer;
    if (this.owned.has(buffer) && this.pool.length < POOL_SIZE && buffer.byteLength === this.poolBytes) {
      this.owned.delete(buffer);
      this.pool.push(buffer);
    }
  }

  /** Bytes of each pooled buffer: the bound of block frames. */
  private get poolBytes(): number {
    return Math.max(this.maxBlockPayload, MAX_CONTROL_PAYLOAD);
  }

  private allocate(length: number): Uint8Array {
    let buffer: ArrayBuffer | undefined;
    if (length <= this.poolBytes) {
      for (;;) {
        buffer = this.pool.pop();
        if (!buffer || buffer.byteLength === this.poolBytes) break;
      }
      // Not zero-filled: every byte is written before the frame is handed out.
      buffer ??= Buffer.allocUnsafeSlow(this.poolBytes).buffer as ArrayBuffer;
      this.owned.add(buffer);
      return new Uint8Array(buffer, 0, length);
    }
    return new Uint8Array(length);
  }

  /** True when no partial frame is buffered. */
  get idle(): boolean {
    return this.headerFill === 0 && this.payload === undefined;
  }

  private checkHeader(view: DataView): number {
    const magic = view.getUint16(0, false);
    if (magic !== FRAME_MAGIC) {
      const first = view.getUint8(0);
      const hint = first === 0x15 || first === 0x16 ? ' (TLS records: one end uses TLS, the other plain TCP)' : '';
      throw new ProtocolError(`not a replikit frame (magic 0x${magic.toString(16).padStart(4, '0')})${hint}`);
    }
    const header = new Uint8Array(view.buffer, view.byteOffset, 12);
    if (crc32(header) !== view.getUint32(12, false)) throw new DamagedFrameError('a frame header arrived damaged');
    const version = view.getUint8(2);
    if (version !== PROTOCOL_VERSION) {
      throw new ProtocolError(`frame of protocol version ${version}; this side speaks version ${PROTOCOL_VERSION}`, {
        version,
      });
    }
    const type = view.getUint8(3);
    if (!KNOWN_TYPES.has(type)) throw new ProtocolError(`unknown frame type ${type}`, { type });
    const length = view.getUint32(4, false);
    const bound = payloadBound(type, this.maxBlockPayload);
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
