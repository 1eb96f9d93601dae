import type { Extent } from '@replikit/core';

/** XAPI's changed block tracking granularity: one bit per 64 KiB. */
export const CBT_BLOCK = 65_536;

/**
 * Turns the base64 bitmap `VDI.list_changed_blocks` returns into ascending, merged extents of a
 * disk of `size` bytes. Block k is byte k>>3 under mask 0x80>>(k&7) (most significant bit first).
 * Returns `undefined` when the bitmap is too short to cover the disk (it cannot vouch for the
 * blocks it lacks) or holds bits past its end.
 */
export function changedExtents(base64: string, size: number): Extent[] | undefined {
  if (typeof base64 !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(base64)) return undefined;
  const bitmap = Buffer.from(base64, 'base64');
  const blocks = Math.ceil(size / CBT_BLOCK);
  if (bitmap.length * 8 < blocks) return undefined;
  const extents: Extent[] = [];
  for (let byte = 0; byte < bitmap.length; byte++) {
    const bits = bitmap[byte]!;
    if (bits === 0) continue;
    for (let bit = 0; bit < 8; bit++) {
      if ((bits & (0x80 >> bit)) === 0) continue;
      const block = byte * 8 + bit;
      if (block >= blocks) return undefined;
      const offset = block * CBT_BLOCK;
      const length = Math.min(CBT_BLOCK, size - offset);
      const last = extents.at(-1);
      if (last && last.offset + last.length === offset) last.length += length;
      else extents.push({ offset, length });
    }
  }
  return extents;
}
