import { type Extent, FormatError, throwIfAborted } from '@replikit/core';
import { checkRange } from '@replikit/core/internal';
import { allocUninitialized, type ByteSource, checkInside, openFileSource, readBytes } from '../byte-source.js';
import { formatHex } from '../hex.js';
import { coalesce, type ImageInfo, type ImageReader, unionExtents } from '../image.js';
import { checkDepth, firstExisting, type ParentOptions, parentCandidates } from '../parent.js';
import {
  decodeUtf16le,
  locatorRange,
  PLATFORM,
  parseVhdFooter,
  parseVhdHeader,
  VHD_BAT_FREE,
  type VhdFooter,
  type VhdHeader,
  vhdBitmapSize,
  vhdVirtualSize,
} from './vhd-structs.js';

/** A reader of a VHD image (fixed, dynamic or differencing). */
export class VhdReader implements ImageReader {
  readonly size: number;
  readonly blockSize: number;
  readonly info: ImageInfo;
  private readonly bitmaps = new Map<number, Uint8Array>();
  private closed = false;

  /** @internal use {@link openVhd}. */
  constructor(
    private readonly source: ByteSource,
    /** The parsed footer. */
    readonly footer: VhdFooter,
    /** The dynamic header (undefined for a fixed disk). */
    readonly header: VhdHeader | undefined,
    private readonly bat: Uint32Array | undefined,
    readonly parent: ImageReader | undefined,
    parentPath: string | undefined,
  ) {
    this.size = vhdVirtualSize(footer);
    this.blockSize = header?.blockSize ?? 2 * 1024 * 1024;
    const subformat = footer.diskType === 2 ? 'fixed' : footer.diskType === 3 ? 'dynamic' : 'differencing';
    this.info = {
      format: 'vhd',
      subformat,
      path: source.name,
      size: this.size,
      blockSize: this.blockSize,
      logicalSectorSize: 512,
      fileSize: source.size,
      ...(parentPath ? { parent: parentPath } : {}),
      id: formatHex(footer.uniqueId),
      extra: {
        creatorApp: footer.creatorApp.replace(/\0/g, ''),
        currentSize: footer.currentSize,
        geometry: { cylinders: footer.cylinders, heads: footer.heads, sectorsPerTrack: footer.sectorsPerTrack },
        ...(bat ? { allocatedBlocks: bat.reduce((n, e) => (e === VHD_BAT_FREE ? n : n + 1), 0) } : {}),
      },
    };
  }

  private get bitmapSize(): number {
    return vhdBitmapSize(this.blockSize);
  }

  /** The BAT entries (sector numbers, 0xFFFFFFFF = free), or undefined for a fixed disk. */
  get blockTable(): Uint32Array | undefined {
    return this.bat;
  }

  async *allocated(options: { signal?: AbortSignal } = {}): AsyncGenerator<Extent> {
    throwIfAborted(options.signal);
    if (!this.bat) {
      if (this.size > 0) yield { offset: 0, length: this.size };
      return;
    }
    const own = this.ownExtents();
    if (this.parent) {
      yield* unionExtents(
        (async function* () {
          yield* own;
        })(),
        this.parent.allocated(options),
      );
    } else {
      yield* own;
    }
  }

  private ownExtents(): Extent[] {
    const bs = this.blockSize;
    const list: Extent[] = [];
    const blocks = Math.ceil(this.size / bs);
    for (let b = 0; b < blocks; b++) {
      if (this.bat![b] !== VHD_BAT_FREE) list.push({ offset: b * bs, length: Math.min(bs, this.size - b * bs) });
    }
    return [...coalesce(list)];
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
    if (!this.bat) {
      if (length > 0) await this.source.readInto(out, offset, 'VHD data');
      return;
    }
    const bs = this.blockSize;
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      const b = Math.floor(pos / bs);
      const inBlock = pos - b * bs;
      const n = Math.min(bs - inBlock, end - pos);
      const target = out.subarray(pos - offset, pos - offset + n);
      const entry = this.bat[b]!;
      if (entry === VHD_BAT_FREE) {
        if (this.parent) await this.parent.readInto(pos, target, options);
        else target.fill(0);
      } else {
        const dataStart = entry * 512 + this.bitmapSize;
        if (!this.parent) {
          await this.source.readInto(target, dataStart + inBlock, `VHD block ${b}`);
        } else {
          await this.readDifferencing(b, dataStart, inBlock, target, pos, options);
        }
      }
      pos += n;
    }
    return;
  }

  private async readDifferencing(
    b: number,
    dataStart: number,
    inBlock: number,
    target: Uint8Array,
    pos: number,
    options: { signal?: AbortSignal },
  ): Promise<void> {
    const bitmap = await this.bitmap(b);
    const n = target.length;
    let at = 0;
    while (at < n) {
      const sector = Math.floor((inBlock + at) / 512);
      const set = (bitmap[sector >> 3]! & (0x80 >> (sector & 7))) !== 0;
      let last = sector + 1;
      const lastSector = Math.floor((inBlock + n - 1) / 512);
      while (last <= lastSector) {
        // whole bytes of equal bits at a time
        if ((last & 7) === 0 && last + 8 <= lastSector + 1) {
          const byte = bitmap[last >> 3]!;
          if (byte === (set ? 0xff : 0)) {
            last += 8;
            continue;
          }
        }
        if (((bitmap[last >> 3]! & (0x80 >> (last & 7))) !== 0) !== set) break;
        last++;
      }
      const runEnd = Math.min(n, last * 512 - inBlock);
      const piece = target.subarray(at, runEnd);
      if (set) await this.source.readInto(piece, dataStart + inBlock + at, `VHD block ${b}`);
      else await this.parent!.readInto(pos + at, piece, options);
      at = runEnd;
    }
  }

  private async bitmap(b: number): Promise<Uint8Array> {
    let bitmap = this.bitmaps.get(b);
    if (!bitmap) {
      bitmap = await readBytes(this.source, this.bat![b]! * 512, this.bitmapSize, `VHD block ${b} sector bitmap`);
      if (this.bitmaps.size >= 4096) this.bitmaps.clear();
      this.bitmaps.set(b, bitmap);
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

/** Opens a VHD file. A differencing image opens its parent chain (see {@link ParentOptions}). */
export async function openVhd(path: string, options: ParentOptions = {}): Promise<VhdReader> {
  const source = await openFileSource(path);
  try {
    return await openVhdSource(source, options);
  } catch (error) {
    await source.close();
    throw error;
  }
}

/** Opens a VHD from any {@link ByteSource} (the source is closed with the reader). */
export async function openVhdSource(source: ByteSource, options: ParentOptions = {}): Promise<VhdReader> {
  const file = source.name;
  if (source.size < 512) {
    throw new FormatError(`${file}: ${source.size} bytes is too short for a VHD (at least a 512-byte footer)`);
  }
  let footer: VhdFooter;
  const tailOffset = source.size - 512;
  try {
    footer = parseVhdFooter(await readBytes(source, tailOffset, 512, 'VHD footer'), file, tailOffset);
  } catch (error) {
    // a dynamic disk keeps a copy of its footer at offset 0
    let copy: VhdFooter | undefined;
    try {
      copy = parseVhdFooter(await readBytes(source, 0, 512, 'VHD footer copy'), file, 0);
    } catch {
      throw error;
    }
    if (copy.diskType === 2) throw error;
    footer = copy;
  }
  const size = vhdVirtualSize(footer);
  if (footer.diskType === 2) {
    if (size > source.size - 512) {
      throw new FormatError(
        `${file}: fixed VHD of ${size} bytes, but the file holds only ${source.size - 512} bytes of data: it is truncated`,
      );
    }
    return new VhdReader(source, footer, undefined, undefined, undefined, undefined);
  }
  if (footer.dataOffset > BigInt(source.size - 1024)) {
    throw new FormatError(
      `${file}: VHD footer data offset ${footer.dataOffset} points past the end of the file (${source.size} bytes)`,
    );
  }
  const headerOffset = Number(footer.dataOffset);
  const header = parseVhdHeader(await readBytes(source, headerOffset, 1024, 'VHD dynamic header'), file, headerOffset);
  const needed = Math.ceil(size / header.blockSize);
  if (header.maxTableEntries < needed) {
    throw new FormatError(
      `${file}: VHD BAT has ${header.maxTableEntries} entries, but ${needed} blocks of ${header.blockSize} bytes are needed for ${size} bytes`,
    );
  }
  checkInside(source, header.tableOffset, header.maxTableEntries * 4, 'VHD block allocation table');
  const raw = await readBytes(source, header.tableOffset, header.maxTableEntries * 4, 'VHD BAT');
  const view = new DataView(raw.buffer);
  const bat = new Uint32Array(needed);
  const bitmapSize = vhdBitmapSize(header.blockSize);
  for (let b = 0; b < needed; b++) {
    const entry = view.getUint32(b * 4, false);
    bat[b] = entry;
    if (entry === VHD_BAT_FREE) continue;
    const used = Math.min(header.blockSize, size - b * header.blockSize);
    if (entry * 512 + bitmapSize + used > source.size) {
      throw new FormatError(
        `${file}: VHD BAT entry ${b} (at byte ${header.tableOffset + 4 * b}) points at sector ${entry}, past the end of the file (${source.size} bytes): the image is truncated`,
        { details: { file, entry: b, sector: entry } },
      );
    }
  }
  let parent: ImageReader | undefined;
  let parentPath: string | undefined;
  if (footer.diskType === 4) {
    const depth = checkDepth(file, options);
    const located: string[] = [];
    for (const kind of [PLATFORM.W2ru, PLATFORM.W2ku, PLATFORM.MacX]) {
      for (const l of header.locators.filter((x) => x.platformCode === kind)) {
        const range = locatorRange(l, source.size, file);
        const bytes = await readBytes(source, range.offset, range.length, 'VHD parent locator');
        located.push(
          kind === PLATFORM.MacX
            ? decodeURIComponent(new TextDecoder().decode(bytes).replace(/^file:\/\//, ''))
            : decodeUtf16le(bytes),
        );
      }
    }
    if (header.parentName) located.push(header.parentName);
    const candidates = parentCandidates(file, located);
    const childOptions = { ...options, depth: depth + 1 };
    if (options.resolveParent) {
      parent = await options.resolveParent(file, candidates);
    } else {
      parentPath = await firstExisting(file, candidates);
      parent = await openVhd(parentPath, childOptions);
    }
    parentPath ??= parent.info.path;
    const parentId = (parent as Partial<VhdReader>).footer?.uniqueId;
    if (!parentId || Buffer.compare(parentId, header.parentUniqueId) !== 0) {
      await parent.close();
      throw new FormatError(
        `${file}: parent ${parentPath} is not the image this differencing VHD was made from: expected unique id ${formatHex(header.parentUniqueId)}, found ${parentId ? formatHex(parentId) : 'a non-VHD image'}`,
      );
    }
    if (parent.size !== size) {
      await parent.close();
      throw new FormatError(`${file}: parent ${parentPath} has ${parent.size} bytes, the child ${size}`);
    }
  }
  return new VhdReader(source, footer, header, bat, parent, parentPath);
}
