import { type DiskReader, type Extent, throwIfAborted } from '@replikit/core';
import { coalesce, type ImageReader } from './image.js';

/** The result of {@link compareDisks}. */
export interface CompareResult {
  /** True when both disks have the same size and the same bytes. */
  equal: boolean;
  /** The first offset where they differ (the smaller size when only the sizes differ). */
  firstDifference?: number;
  /** Set when the sizes differ. */
  sizes?: { a: number; b: number };
}

async function collect(reader: DiskReader, signal?: AbortSignal): Promise<Extent[]> {
  const list: Extent[] = [];
  for await (const e of reader.allocated(signal ? { signal } : {})) list.push(e);
  return list;
}

/**
 * Compares the virtual contents of two disks: only where either may hold data (outside their
 * allocated extents both read as zeroes), 1 MiB at a time.
 */
export async function compareDisks(
  a: DiskReader,
  b: DiskReader,
  options: { signal?: AbortSignal } = {},
): Promise<CompareResult> {
  const size = Math.min(a.size, b.size);
  const extents = [
    ...coalesce(
      [...(await collect(a, options.signal)), ...(await collect(b, options.signal))].sort(
        (x, y) => x.offset - y.offset,
      ),
    ),
  ];
  const chunk = 1024 * 1024;
  const bufA = new Uint8Array(chunk);
  const bufB = new Uint8Array(chunk);
  const fill = async (reader: DiskReader, buffer: Uint8Array, at: number, n: number): Promise<Uint8Array> => {
    const into = (reader as Partial<ImageReader>).readInto;
    if (!into) return reader.read(at, n);
    const view = buffer.subarray(0, n);
    await into.call(reader, at, view);
    return view;
  };
  for (const e of extents) {
    const end = Math.min(size, e.offset + e.length);
    for (let at = e.offset; at < end; at += chunk) {
      throwIfAborted(options.signal);
      const n = Math.min(chunk, end - at);
      const [x, y] = await Promise.all([fill(a, bufA, at, n), fill(b, bufB, at, n)]);
      const bx = Buffer.from(x.buffer, x.byteOffset, x.byteLength);
      const by = Buffer.from(y.buffer, y.byteOffset, y.byteLength);
      if (bx.equals(by)) continue;
      let lo = 0;
      let hi = n;
      // binary search for the first differing byte, memcmp per step
      while (hi - lo > 1) {
        const mid = (lo + hi) >>> 1;
        if (bx.compare(by, 0, mid, 0, mid) === 0) lo = mid;
        else hi = mid;
      }
      return { equal: false, firstDifference: at + lo };
    }
  }
  if (a.size !== b.size) {
    // the longer disk must read as zeroes past the shorter one for the contents to match
    return { equal: false, firstDifference: size, sizes: { a: a.size, b: b.size } };
  }
  return { equal: true };
}
