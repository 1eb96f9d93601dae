import { basename } from 'node:path';
import { FormatError, InputError, throwIfAborted } from '@replikit/core';
import { randomGuid } from '../guid.js';
import { VHD_DEFAULT_BLOCK_SIZE, type VhdParentRef, vhdLayout } from './vhd-layout.js';
import { buildVhdFooter, buildVhdHeader, VHD_TYPE } from './vhd-structs.js';

/** Options of {@link vhdStream}. */
export interface VhdStreamOptions {
  /** Virtual size in bytes (rounded up to a multiple of 512). */
  size: number;
  /** @default 2 MiB */
  blockSize?: number;
  /**
   * The indices of the blocks the stream carries, ascending: the BAT is written up front from
   * them, so the stream can be uploaded without a temporary file. Every other block is
   * unallocated (zeroes, or the parent's data for a differencing stream).
   */
  blocks: readonly number[];
  /**
   * Returns block `index`'s full content (`blockSize` bytes; the last block may be shorter).
   * For a differencing stream the block replaces the parent's block entirely.
   */
  readBlock(index: number): Promise<Uint8Array>;
  /** Makes the stream a differencing VHD of this parent. */
  parent?: VhdParentRef;
  /** The path the stream will be stored at (for the relative parent locator). */
  path?: string;
  /** The new disk's unique id. @default random */
  uniqueId?: Uint8Array;
  signal?: AbortSignal;
}

function plan(options: VhdStreamOptions) {
  const layout = vhdLayout(options.size, options.blockSize ?? VHD_DEFAULT_BLOCK_SIZE, options.path, options.parent);
  let previous = -1;
  for (const b of options.blocks) {
    if (!Number.isSafeInteger(b) || b <= previous || b >= layout.entries) {
      throw new InputError(`VHD stream: block index ${b} is out of order or outside 0..${layout.entries - 1}`);
    }
    previous = b;
  }
  const blockSpan = layout.bitmapSize + layout.blockSize;
  return { layout, blockSpan, length: layout.dataStart + options.blocks.length * blockSpan + 512 };
}

/** The exact byte length of the stream {@link vhdStream} makes with these options. */
export function vhdStreamLength(options: Omit<VhdStreamOptions, 'readBlock'>): number {
  return plan({ ...options, readBlock: async () => new Uint8Array() }).length;
}

/**
 * Produces a dynamic (or, with `parent`, differencing) VHD as a stream of byte chunks, in file
 * order: footer copy, header, BAT, parent locators, then each block (bitmap and data), then the
 * footer. Memory stays at about one block.
 */
export async function* vhdStream(options: VhdStreamOptions): AsyncGenerator<Uint8Array> {
  const { layout, blockSpan } = plan(options);
  const uniqueId = options.uniqueId ?? randomGuid();
  const footer = buildVhdFooter({
    diskType: options.parent ? VHD_TYPE.differencing : VHD_TYPE.dynamic,
    size: layout.size,
    uniqueId,
    dataOffset: 512n,
  });
  const head = new Uint8Array(layout.dataStart);
  head.set(footer, 0);
  head.set(
    buildVhdHeader({
      tableOffset: layout.tableOffset,
      maxTableEntries: layout.entries,
      blockSize: layout.blockSize,
      ...(options.parent
        ? {
            parent: {
              uniqueId: options.parent.uniqueId,
              timestamp: options.parent.timestamp,
              name: basename(options.parent.path),
              locators: layout.locators,
            },
          }
        : {}),
    }),
    512,
  );
  const bat = new DataView(head.buffer, layout.tableOffset, Math.ceil((layout.entries * 4) / 512) * 512);
  for (let i = 0; i < bat.byteLength; i += 4) bat.setUint32(i, 0xffffffff, false);
  options.blocks.forEach((b, i) => {
    bat.setUint32(b * 4, (layout.dataStart + i * blockSpan) / 512, false);
  });
  for (const d of layout.locatorData) head.set(d.bytes, d.offset);
  yield head;
  const bitmap = new Uint8Array(layout.bitmapSize).fill(0xff);
  for (const b of options.blocks) {
    throwIfAborted(options.signal);
    const data = await options.readBlock(b);
    const expected = Math.min(layout.blockSize, layout.size - b * layout.blockSize);
    if (data.length !== layout.blockSize && data.length !== expected) {
      throw new FormatError(`VHD stream: block ${b} has ${data.length} bytes, expected ${expected}`);
    }
    yield bitmap;
    yield data;
    if (data.length < layout.blockSize) yield new Uint8Array(layout.blockSize - data.length);
  }
  yield footer;
}
