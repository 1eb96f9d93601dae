/**
 * XORs `b` into `target` in place (`target[i] ^= b[i]`): four bytes at a time where both views
 * are 4-byte aligned, byte by byte for the rest. Both must have the same length.
 */
export function xorInto(target: Uint8Array, b: Uint8Array): void {
  const length = target.length;
  if (b.length !== length) throw new RangeError(`xorInto: lengths differ (${length} and ${b.length})`);
  let i = 0;
  if (target.byteOffset % 4 === 0 && b.byteOffset % 4 === 0) {
    const words = length >>> 2;
    const t32 = new Uint32Array(target.buffer, target.byteOffset, words);
    const b32 = new Uint32Array(b.buffer, b.byteOffset, words);
    for (let w = 0; w < words; w++) t32[w]! ^= b32[w]!;
    i = words * 4;
  }
  for (; i < length; i++) target[i]! ^= b[i]!;
}
