/**
 * Bytes of framing the block-stream protocol adds to each operation (type, flags, disk, index,
 * length, count), used to count wire bytes the same way for every transport. The digest, when
 * sent, is counted on top.
 */
export const FRAME_OVERHEAD_BYTES = 24;
