import { BLOCK_FIXED_BYTES, FrameType } from './constants.js';

/**
 * How many leading bytes of a payload the frame's body check covers: everything, except in a
 * `block` frame, whose data is covered by the block digest instead (only the fixed part and
 * the digest are checked, so the hot path never runs a CRC over block data).
 */
export function coveredLength(type: number, payload: Uint8Array): number {
  if (type !== FrameType.block || payload.length < BLOCK_FIXED_BYTES) return payload.length;
  return Math.min(payload.length, BLOCK_FIXED_BYTES + payload[14]!);
}
