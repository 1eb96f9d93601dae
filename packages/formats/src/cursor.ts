import { FormatError } from '@replikit/core';

/**
 * A bounds-checked view of one structure read from a file. Every field of a header, a table or a
 * record is read through it, so no offset or length from a file is used unchecked: a read outside
 * the structure, or a 64-bit value too large for a safe integer, throws a {@link FormatError}
 * that names the file, the structure and the absolute byte offset.
 */
export class Cursor {
  /** The bytes of the structure. */
  readonly bytes: Uint8Array;
  private readonly view: DataView;

  /**
   * @param bytes - the structure's bytes
   * @param file - the file name, for messages
   * @param what - the structure's name, for messages (`VHD footer`, `VHDX header 1`)
   * @param base - the structure's offset in the file, for messages
   */
  constructor(
    bytes: Uint8Array,
    readonly file: string,
    readonly what: string,
    readonly base = 0,
  ) {
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  /** The structure's length in bytes. */
  get length(): number {
    return this.bytes.byteLength;
  }

  /** A {@link FormatError} about the field at `offset`: "<file>: <what> at byte N: <message>". */
  error(offset: number, message: string, details: Record<string, unknown> = {}): FormatError {
    return new FormatError(`${this.file}: ${this.what} at byte ${this.base + offset}: ${message}`, {
      details: { file: this.file, structure: this.what, offset: this.base + offset, ...details },
    });
  }

  private check(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || offset < 0 || offset + length > this.bytes.byteLength) {
      throw this.error(
        Number.isSafeInteger(offset) ? offset : 0,
        `field of ${length} bytes lies outside the ${this.bytes.byteLength}-byte structure (truncated or corrupt)`,
      );
    }
  }

  u8(offset: number): number {
    this.check(offset, 1);
    return this.view.getUint8(offset);
  }
  u16le(offset: number): number {
    this.check(offset, 2);
    return this.view.getUint16(offset, true);
  }
  u16be(offset: number): number {
    this.check(offset, 2);
    return this.view.getUint16(offset, false);
  }
  u32le(offset: number): number {
    this.check(offset, 4);
    return this.view.getUint32(offset, true);
  }
  u32be(offset: number): number {
    this.check(offset, 4);
    return this.view.getUint32(offset, false);
  }
  /** A little-endian u64 that must fit a safe integer. */
  u64le(offset: number, field: string): number {
    this.check(offset, 8);
    return this.safe(offset, this.view.getBigUint64(offset, true), field);
  }
  /** A big-endian u64 that must fit a safe integer. */
  u64be(offset: number, field: string): number {
    this.check(offset, 8);
    return this.safe(offset, this.view.getBigUint64(offset, false), field);
  }
  /** A raw big-endian u64, for fields with sentinel values such as all-ones. */
  u64beRaw(offset: number): bigint {
    this.check(offset, 8);
    return this.view.getBigUint64(offset, false);
  }
  /** A raw little-endian u64. */
  u64leRaw(offset: number): bigint {
    this.check(offset, 8);
    return this.view.getBigUint64(offset, true);
  }
  /** A sub-range of the structure, without copying. */
  slice(offset: number, length: number): Uint8Array {
    this.check(offset, length);
    return this.bytes.subarray(offset, offset + length);
  }
  /** `length` bytes as Latin-1 text (signatures, cookies). */
  ascii(offset: number, length: number): string {
    return String.fromCharCode(...this.slice(offset, length));
  }
  /** Throws unless the bytes at `offset` spell `expected`. */
  expectSignature(offset: number, expected: string): void {
    const found = this.ascii(offset, expected.length);
    if (found !== expected) {
      throw this.error(offset, `bad signature: expected '${expected}', found '${printable(found)}'`, {
        expected,
        found,
      });
    }
  }

  private safe(offset: number, value: bigint, field: string): number {
    if (value > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw this.error(offset, `${field} ${value} is too large (more than 2^53 - 1)`, { field });
    }
    return Number(value);
  }
}

/** Makes a string from a file safe to print in a one-line message. */
export function printable(text: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: that is the point: control characters are replaced
  return text.replace(/[\u0000-\u001f\u007f-\u00ff]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

/** True when `n` is a power of two (1, 2, 4, …) within the safe integers. */
export function isPowerOfTwo(n: number): boolean {
  return Number.isSafeInteger(n) && n > 0 && 2 ** Math.round(Math.log2(n)) === n;
}

/** `ceil(a / b)` for non-negative safe integers. */
export function divCeil(a: number, b: number): number {
  return Math.floor((a + b - 1) / b);
}

/** Rounds `n` up to a multiple of `unit`. */
export function roundUp(n: number, unit: number): number {
  return divCeil(n, unit) * unit;
}
