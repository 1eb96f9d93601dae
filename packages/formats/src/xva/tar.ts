import { FormatError } from '@replikit/core';
import { Cursor, printable } from '../cursor.js';

/** One 512-byte tar block. */
export const TAR_BLOCK = 512;

/** Builds a POSIX ustar header for a regular file. */
export function tarHeader(name: string, size: number, mtime: number): Uint8Array {
  const h = new Uint8Array(TAR_BLOCK);
  const enc = new TextEncoder();
  const nameBytes = enc.encode(name);
  if (nameBytes.length > 100) throw new FormatError(`tar entry name '${name}' is longer than 100 bytes`);
  const put = (offset: number, text: string) => h.set(enc.encode(text), offset);
  const octal = (offset: number, width: number, value: number) =>
    put(offset, `${value.toString(8).padStart(width - 1, '0')}\0`);
  h.set(nameBytes, 0);
  octal(100, 8, 0o644);
  octal(108, 8, 0);
  octal(116, 8, 0);
  octal(124, 12, size);
  octal(136, 12, Math.max(0, Math.floor(mtime)));
  h.fill(0x20, 148, 156);
  put(156, '0');
  put(257, 'ustar\0');
  put(263, '00');
  put(265, 'root');
  put(297, 'root');
  let sum = 0;
  for (const b of h) sum += b;
  put(148, `${sum.toString(8).padStart(6, '0')}\0 `);
  return h;
}

/** A parsed tar header. */
export interface TarEntry {
  name: string;
  size: number;
  type: string;
  /** Where the header starts in the archive. */
  offset: number;
}

/**
 * Parses a tar header block; `undefined` for an all-zero (end-of-archive) block. Accepts the
 * three header styles XVAs come in: POSIX ustar (`ustar\0` `00`, whose prefix field extends the
 * name), GNU (`ustar  \0`, whose prefix area holds other fields) and pre-POSIX V7 headers without
 * a magic, as XAPI writes them (its `Tar.Header.make`: typeflag NUL, mode 0, mtime 0). The header
 * checksum is always verified (as an unsigned, or as old tars did, a signed byte sum).
 */
export function parseTarHeader(block: Uint8Array, offset: number, file: string): TarEntry | undefined {
  if (block.every((b) => b === 0)) return undefined;
  const c = new Cursor(block, file, 'tar header', offset);
  const field = (at: number, len: number) => {
    const bytes = c.slice(at, len);
    const end = bytes.indexOf(0);
    return new TextDecoder().decode(end === -1 ? bytes : bytes.subarray(0, end));
  };
  const octal = (at: number, len: number, what: string): number => {
    const bytes = c.slice(at, len);
    if (bytes[0]! & 0x80) {
      // GNU base-256 for large values
      let value = 0;
      for (let i = 1; i < len; i++) value = value * 256 + bytes[i]!;
      if (!Number.isSafeInteger(value) || bytes[0] !== 0x80) throw c.error(at, `${what} is too large`);
      return value;
    }
    const text = field(at, len).trim();
    if (!/^[0-7]*$/.test(text)) throw c.error(at, `${what} '${printable(text)}' is not an octal number`);
    return text === '' ? 0 : Number.parseInt(text, 8);
  };
  const stored = octal(148, 8, 'checksum');
  let sum = 0;
  let signedSum = 0;
  for (let i = 0; i < TAR_BLOCK; i++) {
    const b = i >= 148 && i < 156 ? 0x20 : block[i]!;
    sum += b;
    signedSum += b > 127 ? b - 256 : b;
  }
  if (stored !== sum && stored !== signedSum) {
    throw c.error(148, `header checksum mismatch: stored ${stored}, computed ${sum}`);
  }
  const magic = field(257, 6);
  const posix = magic === 'ustar' && block[262] === 0;
  const gnu = magic === 'ustar ' || (magic === 'ustar' && block[262] === 0x20);
  if (!posix && !gnu && block.subarray(257, 265).some((b) => b !== 0)) {
    throw c.error(257, `unknown tar header magic '${printable(field(257, 8))}' (expected ustar, GNU or none)`);
  }
  const prefix = posix ? field(345, 155) : '';
  const name = field(0, 100);
  return {
    name: prefix ? `${prefix}/${name}` : name,
    size: octal(124, 12, 'size'),
    type: String.fromCharCode(block[156] || 0x30),
    offset,
  };
}

/** Zero padding that completes `size` bytes to whole tar blocks. */
export function tarPadding(size: number): Uint8Array {
  return new Uint8Array((TAR_BLOCK - (size % TAR_BLOCK)) % TAR_BLOCK);
}
