import { FormatError, isReplikitError } from '@replikit/core';
import { openFileSource, readBytes } from './byte-source.js';
import type { ImageInfo, ImageReader } from './image.js';
import { openDisk } from './open-disk.js';
import { VhdReader } from './vhd/vhd-reader.js';
import { vhdBitmapSize } from './vhd/vhd-structs.js';
import { VhdxReader } from './vhdx/vhdx-reader.js';
import { parseRegionTable, parseVhdxHeader } from './vhdx/vhdx-structs.js';

/** The result of {@link checkImage}. */
export interface CheckReport {
  /** True when no problem was found. */
  ok: boolean;
  /** The image's facts, when it could be opened. */
  info?: ImageInfo;
  /** One line per problem. */
  problems: string[];
  /** One line per harmless oddity (a damaged redundant copy, …). */
  warnings: string[];
}

/**
 * Checks an image's structures more thoroughly than opening it does: both VHDX headers and
 * region tables, the VHD footer copy, and that no two blocks share file space.
 */
export async function checkImage(path: string): Promise<CheckReport> {
  const problems: string[] = [];
  const warnings: string[] = [];
  let reader: ImageReader;
  try {
    reader = await openDisk(path);
  } catch (error) {
    if (isReplikitError(error, 'E_FORMAT')) return { ok: false, problems: [error.message], warnings };
    throw error;
  }
  try {
    const spans: { offset: number; length: number; what: string }[] = [];
    if (reader instanceof VhdReader && reader.blockTable) {
      const span = vhdBitmapSize(reader.blockSize) + reader.blockSize;
      reader.blockTable.forEach((e, b) => {
        if (e !== 0xffffffff) spans.push({ offset: e * 512, length: span, what: `block ${b}` });
      });
      const source = await openFileSource(path);
      try {
        // dynamic and differencing disks keep a copy of the footer at offset 0 (fixed ones do not)
        const head = await readBytes(source, 0, 512, 'VHD footer copy');
        const tail = await readBytes(source, source.size - 512, 512, 'VHD footer');
        if (Buffer.compare(head, tail) !== 0) warnings.push('the footer copy at offset 0 differs from the footer');
      } finally {
        await source.close();
      }
    }
    if (reader instanceof VhdxReader) {
      reader.offsets.forEach((o, b) => {
        const s = reader.states[b];
        if (s === 6 || s === 7) spans.push({ offset: o, length: reader.blockSize, what: `block ${b}` });
      });
      reader.bitmapOffsets.forEach((o, c) => {
        if (o) spans.push({ offset: o, length: 1024 * 1024, what: `sector bitmap ${c}` });
      });
      const source = await openFileSource(path);
      try {
        for (const slot of [1, 2] as const) {
          try {
            parseVhdxHeader(await readBytes(source, slot * 65536, 4096, 'VHDX header'), path, slot);
          } catch (error) {
            if (!(error instanceof FormatError)) throw error;
            warnings.push(`header ${slot} is not valid (the other one is used): ${error.message}`);
          }
        }
        const tables: Uint8Array[] = [];
        for (const base of [192 * 1024, 256 * 1024]) {
          const bytes = await readBytes(source, base, 65536, 'VHDX region table');
          tables.push(bytes);
          try {
            parseRegionTable(bytes, path, base);
          } catch (error) {
            if (!(error instanceof FormatError)) throw error;
            warnings.push(`region table at ${base} is not valid: ${error.message}`);
          }
        }
        if (Buffer.compare(tables[0]!, tables[1]!) !== 0) warnings.push('the two region tables differ');
      } finally {
        await source.close();
      }
    }
    spans.sort((a, b) => a.offset - b.offset);
    for (let i = 1; i < spans.length; i++) {
      const prev = spans[i - 1]!;
      const cur = spans[i]!;
      if (cur.offset < prev.offset + prev.length) {
        problems.push(`${cur.what} at byte ${cur.offset} overlaps ${prev.what} at byte ${prev.offset}`);
      }
    }
    return { ok: problems.length === 0, info: reader.info, problems, warnings };
  } finally {
    await reader.close();
  }
}
