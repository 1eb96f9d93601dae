import { ProtocolError } from './protocol-error.js';

/** Reads big-endian fields from a frame payload; every read is bounds-checked. */
export class ByteCursor {
  private readonly view: DataView;
  private at = 0;

  constructor(
    private readonly bytes: Uint8Array,
    private readonly what: string,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  private need(count: number): void {
    if (this.at + count > this.bytes.length) {
      throw new ProtocolError(
        `${this.what} frame is truncated (needs ${this.at + count} bytes, has ${this.bytes.length})`,
      );
    }
  }

  /** Bytes left to read. */
  get remaining(): number {
    return this.bytes.length - this.at;
  }

  u8(): number {
    this.need(1);
    return this.view.getUint8(this.at++);
  }

  u32(): number {
    this.need(4);
    const value = this.view.getUint32(this.at, false);
    this.at += 4;
    return value;
  }

  /** A 64-bit unsigned integer that must be a safe JavaScript integer. */
  u64(): number {
    const high = this.u32();
    const low = this.u32();
    const value = high * 2 ** 32 + low;
    if (!Number.isSafeInteger(value)) throw new ProtocolError(`${this.what} frame holds an integer beyond 2^53`);
    return value;
  }

  /** `count` bytes, as a view (no copy). */
  bytesOf(count: number): Uint8Array {
    this.need(count);
    const out = this.bytes.subarray(this.at, this.at + count);
    this.at += count;
    return out;
  }

  /** Checks that the whole payload was read. */
  end(): void {
    if (this.at !== this.bytes.length) {
      throw new ProtocolError(`${this.what} frame has ${this.bytes.length - this.at} unexpected trailing bytes`);
    }
  }
}

/** Writes a 64-bit unsigned integer (a safe JavaScript integer) big-endian at `at`. */
export function writeU64(view: DataView, at: number, value: number): void {
  view.setUint32(at, Math.floor(value / 2 ** 32), false);
  view.setUint32(at + 4, value % 2 ** 32, false);
}
