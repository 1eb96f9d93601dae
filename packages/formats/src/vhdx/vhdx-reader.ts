import { type Extent, FormatError, throwIfAborted } from '@replikit/core';
import { checkRange } from '@replikit/core/internal';
import { allocUninitialized, type ByteSource, openFileSource, readBytes } from '../byte-source.js';
import { crc32c } from '../crc32c.js';
import { Cursor, printable } from '../cursor.js';
import { formatGuid, parseGuid } from '../guid.js';
import { coalesce, type ImageInfo, type ImageReader, unionExtents } from '../image.js';
import { checkDepth, firstExisting, type ParentOptions, parentCandidates } from '../parent.js';
import {
  BAT_STATE,
  batGeometry,
  currentHeader,
  MIB,
  parseMetadata,
  parseRegionTable,
  parseVhdxHeader,
  VHDX_GUID,
  type VhdxHeader,
  type VhdxMetadata,
  type VhdxRegion,
} from './vhdx-structs.js';

/** Sector bitmaps of payload blocks kept per reader (each at most 64 KiB). */
const BITMAP_CACHE = 256;

/** A reader of a VHDX image (fixed, dynamic or differencing). */
export class VhdxReader implements ImageReader {
  readonly size: number;
  readonly blockSize: number;
  readonly info: ImageInfo;
  /** Sector bitmaps of payload blocks, by block: the read in flight or done (shared by concurrent reads). */
  private readonly bitmaps = new Map<number, Promise<Uint8Array>>();
  private closed = false;

  /** @internal use {@link openVhdx}. */
  constructor(
    private readonly source: ByteSource,
    /** The current header. */
    readonly header: VhdxHeader,
    /** The metadata items. */
    readonly metadata: VhdxMetadata,
    /** Payload block states (BAT bits 0–2), one per block. */
    readonly states: Uint8Array,
    /** Payload block file offsets in bytes (meaningful for present blocks). */
    readonly offsets: Float64Array,
    /** Sector bitmap file offsets per chunk (0 = not present). */
    readonly bitmapOffsets: Float64Array,
    readonly parent: ImageReader | undefined,
    parentPath: string | undefined,
  ) {
    this.size = metadata.virtualSize;
    this.blockSize = metadata.blockSize;
    let present = 0;
    for (const s of states) if (s === BAT_STATE.fullyPresent || s === BAT_STATE.partiallyPresent) present++;
    this.info = {
      format: 'vhdx',
      subformat: metadata.hasParent ? 'differencing' : metadata.leaveBlocksAllocated ? 'fixed' : 'dynamic',
      path: source.name,
      size: this.size,
      blockSize: this.blockSize,
      logicalSectorSize: metadata.logicalSectorSize,
      fileSize: source.size,
      ...(parentPath ? { parent: parentPath } : {}),
      id: formatGuid(metadata.diskId),
      extra: {
        physicalSectorSize: metadata.physicalSectorSize,
        headerSequence: header.sequenceNumber.toString(),
        currentHeader: header.slot,
        dataWriteGuid: formatGuid(header.dataWriteGuid),
        allocatedBlocks: present,
        ...(metadata.parentLocator ? { parentLocator: Object.fromEntries(metadata.parentLocator) } : {}),
      },
    };
  }

  async *allocated(options: { signal?: AbortSignal } = {}): AsyncGenerator<Extent> {
    throwIfAborted(options.signal);
    const bs = this.blockSize;
    const list: Extent[] = [];
    for (let b = 0; b < this.states.length; b++) {
      const s = this.states[b];
      if (s === BAT_STATE.fullyPresent || s === BAT_STATE.partiallyPresent) {
        list.push({ offset: b * bs, length: Math.min(bs, this.size - b * bs) });
      }
    }
    const own = [...coalesce(list)];
    if (!this.parent) {
      yield* own;
      return;
    }
    yield* unionExtents(
      (async function* () {
        yield* own;
      })(),
      this.parent.allocated(options),
    );
  }

  /**
   * The extents whose data this file holds itself (not through its parent), ascending: a fully
   * present block whole, a partially present block of a differencing file by its sector bitmap
   * (to the sector). For a differencing file, what was written on it since it was made.
   */
  async *ownExtents(options: { signal?: AbortSignal } = {}): AsyncGenerator<Extent> {
    const bs = this.blockSize;
    const sector = this.metadata.logicalSectorSize;
    const perBlock = bs / sector;
    const list: Extent[] = [];
    for (let b = 0; b < this.states.length; b++) {
      const start = b * bs;
      if (start >= this.size) break;
      const s = this.states[b];
      if (s === BAT_STATE.fullyPresent) {
        list.push({ offset: start, length: Math.min(bs, this.size - start) });
      } else if (s === BAT_STATE.partiallyPresent) {
        throwIfAborted(options.signal);
        const bitmap = await this.blockBitmap(b);
        for (let i = 0; i < perBlock && start + i * sector < this.size; i++) {
          if ((bitmap[i >> 3]! & (1 << (i & 7))) === 0) continue;
          list.push({ offset: start + i * sector, length: Math.min(sector, this.size - start - i * sector) });
        }
      }
    }
    yield* coalesce(list);
  }

  async read(offset: number, length: number, options: { signal?: AbortSignal } = {}): Promise<Uint8Array> {
    checkRange(this.size, offset, length, `reading ${this.source.name}`);
    const out = allocUninitialized(length);
    await this.readInto(offset, out, options);
    return out;
  }

  async readInto(offset: number, out: Uint8Array, options: { signal?: AbortSignal } = {}): Promise<void> {
    const length = out.length;
    checkRange(this.size, offset, length, `reading ${this.source.name}`);
    throwIfAborted(options.signal);
    const bs = this.blockSize;
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      const b = Math.floor(pos / bs);
      const inBlock = pos - b * bs;
      const n = Math.min(bs - inBlock, end - pos);
      const target = out.subarray(pos - offset, pos - offset + n);
      const state = this.states[b]!;
      if (state === BAT_STATE.fullyPresent) {
        await this.source.readInto(target, this.offsets[b]! + inBlock, `VHDX block ${b}`);
      } else if (state === BAT_STATE.partiallyPresent) {
        await this.readPartial(b, inBlock, target, pos, options);
      } else if (state !== BAT_STATE.zero && this.parent) {
        await this.parent.readInto(pos, target, options);
      } else {
        target.fill(0);
      }
      pos += n;
    }
    return;
  }

  private async readPartial(
    b: number,
    inBlock: number,
    target: Uint8Array,
    pos: number,
    options: { signal?: AbortSignal },
  ): Promise<void> {
    const sectorSize = this.metadata.logicalSectorSize;
    const bitmap = await this.blockBitmap(b);
    const n = target.length;
    let at = 0;
    while (at < n) {
      const s = Math.floor((inBlock + at) / sectorSize);
      const set = (bitmap[s >> 3]! & (1 << (s & 7))) !== 0;
      const lastSector = Math.floor((inBlock + n - 1) / sectorSize);
      let next = s + 1;
      while (next <= lastSector) {
        if ((next & 7) === 0 && next + 8 <= lastSector + 1 && bitmap[next >> 3] === (set ? 0xff : 0)) {
          next += 8;
          continue;
        }
        if (((bitmap[next >> 3]! & (1 << (next & 7))) !== 0) !== set) break;
        next++;
      }
      const runEnd = Math.min(n, next * sectorSize - inBlock);
      const piece = target.subarray(at, runEnd);
      if (set) await this.source.readInto(piece, this.offsets[b]! + inBlock + at, `VHDX block ${b}`);
      else if (this.parent) await this.parent.readInto(pos + at, piece, options);
      else piece.fill(0);
      at = runEnd;
    }
  }

  /**
   * The sector bitmap of payload block `b` (one bit per logical sector, `blockSize / sectorSize / 8`
   * bytes): only that slice of its chunk's 1 MiB sector bitmap block is read, once, and shared by
   * concurrent reads of the block (reading the whole 1 MiB for each read of a partially present
   * block made a small incremental read many times what changed).
   */
  private blockBitmap(b: number): Promise<Uint8Array> {
    let bitmap = this.bitmaps.get(b);
    if (!bitmap) {
      const { chunkRatio } = batGeometry(this.metadata);
      const chunk = Math.floor(b / chunkRatio);
      const bytes = this.blockSize / this.metadata.logicalSectorSize / 8;
      const offset = this.bitmapOffsets[chunk] ?? 0;
      bitmap =
        offset === 0
          ? Promise.resolve(new Uint8Array(bytes))
          : readBytes(
              this.source,
              offset + (b - chunk * chunkRatio) * bytes,
              bytes,
              `VHDX sector bitmap of block ${b}`,
            );
      if (this.bitmaps.size >= BITMAP_CACHE) this.bitmaps.delete(this.bitmaps.keys().next().value!);
      this.bitmaps.set(b, bitmap);
      bitmap.catch(() => {
        if (this.bitmaps.get(b) === bitmap) this.bitmaps.delete(b);
      });
    }
    return bitmap;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.parent?.close();
    await this.source.close();
  }
}

/** Opens a VHDX file. A differencing image opens its parent chain (see {@link ParentOptions}). */
export async function openVhdx(path: string, options: ParentOptions = {}): Promise<VhdxReader> {
  const source = await openFileSource(path);
  try {
    return await openVhdxSource(source, options);
  } catch (error) {
    await source.close();
    throw error;
  }
}

function overlaps(a: { offset: number; length: number }, b: { offset: number; length: number }): boolean {
  return a.offset < b.offset + b.length && b.offset < a.offset + a.length;
}

/** Opens a VHDX from any {@link ByteSource} (the source is closed with the reader). */
export async function openVhdxSource(source: ByteSource, options: ParentOptions = {}): Promise<VhdxReader> {
  const file = source.name;
  if (source.size < MIB) {
    throw new FormatError(`${file}: ${source.size} bytes is too short for a VHDX (the header section alone is 1 MiB)`);
  }
  new Cursor(await readBytes(source, 0, 8, 'VHDX file identifier'), file, 'VHDX file identifier').expectSignature(
    0,
    'vhdxfile',
  );
  const raw1 = await readBytes(source, 64 * 1024, 4096, 'VHDX header 1');
  const raw2 = await readBytes(source, 128 * 1024, 4096, 'VHDX header 2');
  const attempt = (raw: Uint8Array, slot: 1 | 2) => {
    try {
      return parseVhdxHeader(raw, file, slot);
    } catch (error) {
      if (error instanceof FormatError) return error;
      throw error;
    }
  };
  const header = currentHeader(file, attempt(raw1, 1), attempt(raw2, 2), raw1, raw2);
  const log = { offset: header.logOffset, length: header.logLength };
  if (header.logGuid.some((x) => x !== 0)) await refuseActiveLog(source, header);

  let regions: VhdxRegion[] | undefined;
  let firstError: unknown;
  for (const base of [192 * 1024, 256 * 1024]) {
    try {
      regions = parseRegionTable(await readBytes(source, base, 64 * 1024, 'VHDX region table'), file, base);
      break;
    } catch (error) {
      if (!(error instanceof FormatError)) throw error;
      firstError ??= error;
    }
  }
  if (!regions) throw firstError;
  const find = (guid: Uint8Array, what: string): VhdxRegion => {
    const region = regions!.find((r) => Buffer.compare(r.guid, guid) === 0);
    if (!region) throw new FormatError(`${file}: VHDX region table has no ${what} region`);
    if (region.offset + region.length > source.size) {
      throw new FormatError(
        `${file}: VHDX ${what} region (${region.length} bytes at ${region.offset}) ends past the end of the file (${source.size} bytes)`,
      );
    }
    return region;
  };
  const batRegion = find(VHDX_GUID.bat, 'BAT');
  const metaRegion = find(VHDX_GUID.metadata, 'metadata');
  const reserved = [{ offset: 0, length: MIB }, ...(log.length ? [log] : []), ...regions];
  for (let i = 0; i < reserved.length; i++) {
    for (let j = i + 1; j < reserved.length; j++) {
      if (overlaps(reserved[i]!, reserved[j]!)) {
        throw new FormatError(
          `${file}: VHDX regions overlap: ${reserved[i]!.length} bytes at ${reserved[i]!.offset} and ${reserved[j]!.length} bytes at ${reserved[j]!.offset}`,
        );
      }
    }
  }
  const metadata = parseMetadata(await readMetadataRegion(source, metaRegion), file, metaRegion.offset);
  const geo = batGeometry(metadata);
  if (geo.entries * 8 > batRegion.length) {
    throw new FormatError(
      `${file}: VHDX BAT region holds ${batRegion.length / 8} entries, but ${geo.entries} are needed for ${metadata.virtualSize} bytes in blocks of ${metadata.blockSize}`,
    );
  }
  const batBytes = await readBytes(source, batRegion.offset, geo.entries * 8, 'VHDX BAT');
  const bat = new DataView(batBytes.buffer);
  const states = new Uint8Array(geo.dataBlocks);
  const offsets = new Float64Array(geo.dataBlocks);
  const bitmapOffsets = new Float64Array(geo.bitmapBlocks);
  const entryOffset = (i: number) => {
    const low = bat.getUint32(i * 8, true);
    const high = bat.getUint32(i * 8 + 4, true);
    // an offset past 2^53 becomes Infinity, which every range check below rejects
    const offset = high > 0x1fffff ? Number.POSITIVE_INFINITY : high * 2 ** 32 + ((low & 0xfff00000) >>> 0);
    return { state: low & 7, offset };
  };
  const checkBlock = (i: number, what: string, state: number, offset: number, length: number) => {
    const at = batRegion.offset + i * 8;
    if (offset < MIB || offset + length > source.size) {
      throw new FormatError(
        `${file}: VHDX BAT entry ${i} (at byte ${at}, ${what}, state ${state}) points at byte ${offset}, outside the data area of the ${source.size}-byte file: the image is truncated or corrupt`,
        { details: { file, entry: i, offset } },
      );
    }
    const r = reserved.find((x) => overlaps(x, { offset, length }));
    if (r) {
      throw new FormatError(
        `${file}: VHDX BAT entry ${i} (at byte ${at}, ${what}) at byte ${offset} overlaps the structure at ${r.offset}`,
      );
    }
  };
  for (let b = 0; b < geo.dataBlocks; b++) {
    const i = b + Math.floor(b / geo.chunkRatio);
    const { state, offset } = entryOffset(i);
    switch (state) {
      case BAT_STATE.fullyPresent:
      case BAT_STATE.partiallyPresent: {
        if (state === BAT_STATE.partiallyPresent && !metadata.hasParent) {
          throw new FormatError(
            `${file}: VHDX BAT entry ${i} (at byte ${batRegion.offset + i * 8}) is partially present in a disk without a parent`,
          );
        }
        checkBlock(
          i,
          `block ${b}`,
          state,
          offset,
          Math.min(metadata.blockSize, metadata.virtualSize - b * metadata.blockSize),
        );
        offsets[b] = offset;
        break;
      }
      case BAT_STATE.notPresent:
      case BAT_STATE.undefined:
      case BAT_STATE.zero:
      case BAT_STATE.unmapped:
      case BAT_STATE.unmappedOld:
        break;
      default:
        throw new FormatError(
          `${file}: VHDX BAT entry ${i} (at byte ${batRegion.offset + i * 8}) has reserved state ${state} (expected 0, 1, 2, 3, 6 or 7)`,
        );
    }
    states[b] = state;
  }
  if (metadata.hasParent) {
    for (let c = 0; c < geo.bitmapBlocks; c++) {
      const i = c * (geo.chunkRatio + 1) + geo.chunkRatio;
      const { state, offset } = entryOffset(i);
      if (state === BAT_STATE.fullyPresent) {
        checkBlock(i, `sector bitmap ${c}`, state, offset, MIB);
        bitmapOffsets[c] = offset;
      }
    }
  }
  let parent: ImageReader | undefined;
  let parentPath: string | undefined;
  if (metadata.hasParent) {
    const locator = metadata.parentLocator!;
    const depth = checkDepth(file, options);
    const located = ['relative_path', 'volume_path', 'absolute_win32_path']
      .map((k) => locator.get(k))
      .filter((v): v is string => !!v);
    const candidates = parentCandidates(file, located);
    if (options.resolveParent) {
      parent = await options.resolveParent(file, candidates);
    } else {
      parentPath = await firstExisting(file, candidates);
      parent = await openVhdx(parentPath, { ...options, depth: depth + 1 });
    }
    parentPath ??= parent.info.path;
    const linkage = parseGuid(locator.get('parent_linkage')!);
    const found = (parent as Partial<VhdxReader>).header?.dataWriteGuid;
    if (!linkage || !found || Buffer.compare(linkage, found) !== 0) {
      await parent.close();
      throw new FormatError(
        `${file}: parent ${parentPath} is not the image this differencing VHDX was made from: parent_linkage ${printable(locator.get('parent_linkage')!)}, parent's data write GUID ${found ? `{${formatGuid(found)}}` : 'none (not a VHDX)'}`,
      );
    }
    if (parent.size !== metadata.virtualSize) {
      await parent.close();
      throw new FormatError(
        `${file}: parent ${parentPath} has ${parent.size} bytes, the child ${metadata.virtualSize}`,
      );
    }
  }
  return new VhdxReader(source, header, metadata, states, offsets, bitmapOffsets, parent, parentPath);
}

/** The metadata table's size at the start of the metadata region (VHDX spec 3.5). */
const METADATA_TABLE = 64 * 1024;

/**
 * The metadata region as {@link parseMetadata} checks it, read only as far as its items reach:
 * the 64 KiB table, then up to the end of the farthest item (a few KiB past the table), not the
 * whole region (1 MiB as Hyper-V and replikit write it), since every open of every file of a
 * chain pays this. Bytes past the farthest item are zeros; no item refers to them.
 */
async function readMetadataRegion(source: ByteSource, region: VhdxRegion): Promise<Uint8Array> {
  const tableLength = Math.min(METADATA_TABLE, region.length);
  const table = await readBytes(source, region.offset, tableLength, 'VHDX metadata table');
  const view = new DataView(table.buffer, table.byteOffset, table.byteLength);
  let reach = tableLength;
  const entries = tableLength >= 32 ? Math.min(view.getUint16(10, true), Math.floor((tableLength - 32) / 32)) : 0;
  for (let i = 0; i < entries; i++) {
    const at = 32 + 32 * i;
    const end = view.getUint32(at + 16, true) + view.getUint32(at + 20, true);
    reach = Math.max(reach, Math.min(region.length, end));
  }
  const bytes = new Uint8Array(region.length);
  bytes.set(table);
  if (reach > tableLength) {
    bytes.set(
      await readBytes(source, region.offset + tableLength, reach - tableLength, 'VHDX metadata items'),
      tableLength,
    );
  }
  return bytes;
}

/**
 * A VHDX whose header names a log GUID may hold metadata updates that were never applied. This
 * reader does not replay logs: it refuses such a file, unless no valid entry of that log exists.
 */
async function refuseActiveLog(source: ByteSource, header: VhdxHeader): Promise<void> {
  const file = source.name;
  const { logOffset, logLength } = header;
  if (logLength === 0 || logOffset + logLength > source.size) {
    throw new FormatError(
      `${file}: VHDX header names a log (${logLength} bytes at ${logOffset}) that lies outside the file`,
    );
  }
  if (logLength > 256 * MIB) {
    throw new FormatError(`${file}: VHDX log of ${logLength} bytes is larger than the 256 MiB this reader inspects`);
  }
  const log = await readBytes(source, logOffset, logLength, 'VHDX log');
  const view = new DataView(log.buffer);
  for (let at = 0; at + 64 <= log.length; at += 4096) {
    if (view.getUint32(at, false) !== 0x6c6f6765 /* 'loge' */) continue;
    const entryLength = view.getUint32(at + 8, true);
    if (entryLength === 0 || entryLength % 4096 !== 0 || at + entryLength > log.length) continue;
    if (Buffer.compare(log.subarray(at + 32, at + 48), header.logGuid) !== 0) continue;
    const entry = log.slice(at, at + entryLength);
    new DataView(entry.buffer).setUint32(4, 0, true);
    if (crc32c(entry) !== view.getUint32(at + 4, true)) continue;
    throw new FormatError(
      `${file}: VHDX log holds unapplied updates (log entry at byte ${logOffset + at}); replikit does not replay VHDX logs: open the disk once in Hyper-V, or run 'qemu-img check -r all' on it, then retry`,
      { details: { file, logOffset: logOffset + at } },
    );
  }
}
