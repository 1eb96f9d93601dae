import { randomBytes } from 'node:crypto';

/**
 * Formats 16 bytes in Microsoft's mixed-endian GUID layout (Data1 u32 LE, Data2 u16 LE, Data3 u16
 * LE, Data4 8 raw bytes) as `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, lower case.
 */
export function formatGuid(bytes: Uint8Array): string {
  const hex = (from: number, to: number, reverse: boolean) => {
    const part = Array.from(bytes.subarray(from, to), (b) => b.toString(16).padStart(2, '0'));
    return (reverse ? part.reverse() : part).join('');
  };
  return `${hex(0, 4, true)}-${hex(4, 6, true)}-${hex(6, 8, true)}-${hex(8, 10, false)}-${hex(10, 16, false)}`;
}

/** Parses a GUID string (braces optional) into Microsoft's 16-byte layout; undefined if malformed. */
export function parseGuid(text: string): Uint8Array | undefined {
  const m = /^\{?([0-9a-f]{8})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{12})\}?$/i.exec(text.trim());
  if (!m) return undefined;
  const bytes = (hex: string) =>
    Array.from({ length: hex.length / 2 }, (_, i) => Number.parseInt(hex.slice(2 * i, 2 * i + 2), 16));
  return Uint8Array.from([
    ...bytes(m[1]!).reverse(),
    ...bytes(m[2]!).reverse(),
    ...bytes(m[3]!).reverse(),
    ...bytes(m[4]!),
    ...bytes(m[5]!),
  ]);
}

/** A random (version 4) GUID as 16 bytes. */
export function randomGuid(): Uint8Array {
  const bytes = new Uint8Array(randomBytes(16));
  bytes[7] = (bytes[7]! & 0x0f) | 0x40;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;
  return bytes;
}

/** True when two byte arrays hold the same bytes. */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(a, b) === 0;
}
