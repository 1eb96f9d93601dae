import type { DiskRef, Hypervisor } from '../contracts/index.js';

/**
 * Deterministic pseudo-random bytes (xorshift32) for `seed`, never zero, so that written data can
 * always be told apart from holes.
 */
export function testPattern(seed: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = (x & 0xff) | 1;
  }
  return out;
}

/** Reads a whole disk through a fresh reader. */
export async function readWholeDisk(hv: Hypervisor, disk: DiskRef): Promise<Uint8Array> {
  const reader = await hv.openReader(disk);
  try {
    return await reader.read(0, reader.size);
  } finally {
    await reader.close();
  }
}

/** The index of the first differing byte of two arrays, or -1 when they are equal. */
export function firstDifference(a: Uint8Array, b: Uint8Array): number {
  if (Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b)) return -1;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

/** Describes where two byte arrays differ, or returns `'equal'` (readable in an assertion diff). */
export function compareBytes(actual: Uint8Array, expected: Uint8Array): string {
  const at = firstDifference(actual, expected);
  if (at < 0) return 'equal';
  return `differ at byte ${at} (actual length ${actual.length}, expected ${expected.length}; actual ${actual[at]}, expected ${expected[at]})`;
}
