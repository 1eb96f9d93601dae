import type { DiskReader, Extent } from '@replikit/core';

/** The disk image formats this package reads and writes. */
export type ImageFormat = 'raw' | 'vhd' | 'vhdx';

/** What `disk info` shows about an image: plain data, safe to print as JSON. */
export interface ImageInfo {
  /** The format. */
  format: ImageFormat;
  /** The variant: `fixed`, `dynamic`, `differencing` (raw images are `raw`). */
  subformat: 'raw' | 'fixed' | 'dynamic' | 'differencing';
  /** The file. */
  path: string;
  /** Virtual size in bytes. */
  size: number;
  /** The allocation unit in bytes (the format's block size; 64 KiB for raw). */
  blockSize: number;
  /** Logical sector size in bytes. */
  logicalSectorSize: number;
  /** Bytes of the file on disk (its length). */
  fileSize: number;
  /** The parent's path, for a differencing image. */
  parent?: string;
  /** The image's own id (a VHD unique id, a VHDX virtual disk id), as a GUID string. */
  id?: string;
  /** Format-specific facts (creator, geometry, sequence numbers…). */
  extra: Record<string, unknown>;
}

/** A {@link DiskReader} over one image file, with what it knows about the image. */
export interface ImageReader extends DiskReader {
  /** The image's facts. */
  readonly info: ImageInfo;
  /** The parent of a differencing image, opened, or undefined. */
  readonly parent: ImageReader | undefined;
  /**
   * Reads `target.length` bytes at `offset` into `target` (no allocation: copy loops reuse their
   * buffers). The range must lie inside the disk.
   */
  readInto(offset: number, target: Uint8Array, options?: { signal?: AbortSignal }): Promise<void>;
}

/** Merges sorted extents that touch or overlap. */
export function* coalesce(extents: Iterable<Extent>): Generator<Extent> {
  let current: Extent | undefined;
  for (const e of extents) {
    if (e.length <= 0) continue;
    if (current && e.offset <= current.offset + current.length) {
      current.length = Math.max(current.length, e.offset + e.length - current.offset);
    } else {
      if (current) yield current;
      current = { offset: e.offset, length: e.length };
    }
  }
  if (current) yield current;
}

/** The union of two sorted extent lists, sorted and coalesced. */
export async function* unionExtents(a: AsyncIterable<Extent>, b: AsyncIterable<Extent>): AsyncGenerator<Extent> {
  const all: Extent[] = [];
  for await (const e of a) all.push(e);
  for await (const e of b) all.push(e);
  all.sort((x, y) => x.offset - y.offset);
  yield* coalesce(all);
}
