import { open } from 'node:fs/promises';
import { dirname, relative, resolve } from 'node:path';
import { type DiskWriter, InputError, throwIfAborted, toStorageError } from '@replikit/core';
import { checkRange } from '@replikit/core/internal';
import { ZERO_MIB } from '../byte-source.js';
import { isPowerOfTwo, roundUp } from '../cursor.js';
import { type RandomAccessFile, syncIf, writeAll } from '../file-io.js';
import { formatGuid, randomGuid } from '../guid.js';
import type { VhdxReader } from './vhdx-reader.js';
import { BAT_STATE, batGeometry, MIB, sealCrc, VHDX_GUID, VHDX_MAX_SIZE } from './vhdx-structs.js';

/** Options of {@link createVhdx}. */
export interface CreateVhdxOptions {
  /** Virtual size in bytes (rounded up to a multiple of the logical sector size). */
  size: number;
  /**
   * `fixed` (every block allocated up front), `dynamic` (sparse) or `differencing` (needs `parent`).
   * @default 'dynamic', or 'differencing' when a parent is given
   */
  type?: 'fixed' | 'dynamic' | 'differencing';
  /**
   * Block size, a power of two from 1 MiB to 256 MiB.
   * @default 32 MiB (Hyper-V's default); 2 MiB for a differencing disk
   */
  blockSize?: number;
  /** @default 512 */
  logicalSectorSize?: 512 | 4096;
  /** @default 4096 */
  physicalSectorSize?: 512 | 4096;
  /** The parent of a differencing disk: an opened VHDX reader. */
  parent?: VhdxReader;
  /**
   * fsync the file in `flush()` and `close()`, so the image survives a crash of the host. Turn it
   * off for scratch images (qemu-img convert does not sync by default either).
   * @default true
   */
  sync?: boolean;
  /**
   * The file to write instead of creating `path` (a file on another host, written through an
   * agent); it is written from its start and closed with the writer. `path` names it in messages
   * and in a child's parent locator.
   */
  file?: RandomAccessFile;
}

/** A writer of a new VHDX file; `flush()`/`close()` write the BAT, then the headers last. */
export interface VhdxWriter extends DiskWriter {
  /** The file being written. */
  readonly path: string;
}

/** Layout of a new file: header section, log, metadata, BAT, payload (all 1 MiB aligned). */
const LOG_OFFSET = MIB;
const LOG_LENGTH = MIB;
const METADATA_OFFSET = 2 * MIB;
const METADATA_LENGTH = MIB;
const BAT_OFFSET = 3 * MIB;

/**
 * Creates a VHDX file (replacing any file at `path`) that Hyper-V and qemu-img accept, and returns
 * a writer for it. Blocks are allocated on first write (dynamic, differencing) or up front (fixed,
 * as a sparse file). The headers are written last, so an interrupted write leaves a file every
 * reader rejects rather than a half-valid one.
 *
 * @example
 * ```ts
 * const w = await createVhdx('/tmp/disk.vhdx', { size: 64 * 2 ** 20, blockSize: 2 ** 20 });
 * await w.write(0, new Uint8Array(4096).fill(1));
 * await w.close();
 * ```
 */
export async function createVhdx(path: string, options: CreateVhdxOptions): Promise<VhdxWriter> {
  const parent = options.parent;
  const type = options.type ?? (parent ? 'differencing' : 'dynamic');
  if (type === 'differencing' && !parent) throw new InputError('a differencing VHDX needs a parent');
  if (type !== 'differencing' && parent) throw new InputError(`a ${type} VHDX has no parent`);
  const logical = options.logicalSectorSize ?? parent?.metadata.logicalSectorSize ?? 512;
  const physical = options.physicalSectorSize ?? 4096;
  if (logical !== 512 && logical !== 4096) throw new InputError(`logical sector size ${logical}: expected 512 or 4096`);
  if (physical !== 512 && physical !== 4096) {
    throw new InputError(`physical sector size ${physical}: expected 512 or 4096`);
  }
  const blockSize = options.blockSize ?? (parent ? 2 * MIB : 32 * MIB);
  if (!isPowerOfTwo(blockSize) || blockSize < MIB || blockSize > 256 * MIB) {
    throw new InputError(`VHDX block size ${blockSize} must be a power of two from 1 MiB to 256 MiB`);
  }
  if (!Number.isSafeInteger(options.size) || options.size < 0) {
    throw new InputError(`VHDX size ${options.size} is not a whole number of bytes`);
  }
  const size = roundUp(options.size, logical);
  if (size > VHDX_MAX_SIZE) throw new InputError(`VHDX size ${size} is larger than the VHDX maximum (64 TiB)`);
  if (parent && parent.size !== size) {
    throw new InputError(`the child's size ${size} differs from the parent's ${parent.size}`);
  }
  let handle: RandomAccessFile;
  try {
    handle = options.file ?? (await open(path, 'w+'));
  } catch (error) {
    throw toStorageError(error, `creating ${path}`);
  }
  const writer = new VhdxFileWriter(path, handle, {
    size,
    type,
    blockSize,
    logical,
    physical,
    parent,
    sync: options.sync ?? true,
  });
  try {
    await writer.init();
  } catch (error) {
    await handle.close().catch(() => undefined);
    throw error;
  }
  return writer;
}

interface Params {
  size: number;
  type: 'fixed' | 'dynamic' | 'differencing';
  blockSize: number;
  logical: number;
  physical: number;
  parent: VhdxReader | undefined;
  sync: boolean;
}

class VhdxFileWriter implements VhdxWriter {
  readonly size: number;
  private readonly geo: ReturnType<typeof batGeometry>;
  private readonly batLength: number;
  private readonly offsets: Float64Array;
  private readonly states: Uint8Array;
  private readonly bitmaps = new Map<number, { offset: number; bits: Uint8Array }>();
  private readonly dirtyBitmaps = new Set<number>();
  private nextFree: number;
  private closed = false;
  private structuresWritten = false;
  private readonly fileWriteGuid = randomGuid();
  private readonly dataWriteGuid = randomGuid();
  private readonly diskId = randomGuid();

  constructor(
    readonly path: string,
    private readonly handle: RandomAccessFile,
    private readonly p: Params,
  ) {
    this.size = p.size;
    this.geo = batGeometry({
      blockSize: p.blockSize,
      logicalSectorSize: p.logical,
      virtualSize: p.size,
      hasParent: p.type === 'differencing',
    });
    this.batLength = Math.max(MIB, roundUp(this.geo.entries * 8, MIB));
    this.offsets = new Float64Array(this.geo.dataBlocks);
    this.states = new Uint8Array(this.geo.dataBlocks);
    this.nextFree = BAT_OFFSET + this.batLength;
  }

  async init(): Promise<void> {
    if (this.p.type === 'fixed') {
      for (let b = 0; b < this.geo.dataBlocks; b++) {
        this.offsets[b] = this.nextFree;
        this.states[b] = BAT_STATE.fullyPresent;
        this.nextFree += this.p.blockSize;
      }
    }
    await this.handle.truncate(this.nextFree).catch((error) => {
      throw toStorageError(error, `creating ${this.path}`);
    });
  }

  private allocate(b: number): void {
    this.offsets[b] = this.nextFree;
    this.nextFree += this.p.blockSize;
    this.states[b] = this.p.type === 'differencing' ? BAT_STATE.partiallyPresent : BAT_STATE.fullyPresent;
  }

  async write(offset: number, data: Uint8Array, options: { signal?: AbortSignal } = {}): Promise<void> {
    checkRange(this.size, offset, data.length, `writing ${this.path}`);
    throwIfAborted(options.signal);
    const sector = this.p.logical;
    if (this.p.parent && (offset % sector !== 0 || data.length % sector !== 0)) {
      const start = Math.floor(offset / sector) * sector;
      const end = Math.ceil((offset + data.length) / sector) * sector;
      const whole = new Uint8Array(end - start);
      whole.set(await this.readCurrent(start, sector), 0);
      if (end - start > sector) whole.set(await this.readCurrent(end - sector, sector), end - start - sector);
      whole.set(data, offset - start);
      return this.write(start, whole, options);
    }
    const bs = this.p.blockSize;
    let pos = offset;
    const end = offset + data.length;
    while (pos < end) {
      const b = Math.floor(pos / bs);
      const inBlock = pos - b * bs;
      const n = Math.min(bs - inBlock, end - pos);
      const state = this.states[b];
      if (state !== BAT_STATE.fullyPresent && state !== BAT_STATE.partiallyPresent) {
        this.allocate(b);
        if (this.p.type === 'differencing' && state === BAT_STATE.zero) {
          // the block read as zeroes, not as the parent: keep it so for the sectors not written now
          await this.setSectors(b, 0, bs / sector);
        }
      }
      await writeAll(this.handle, data.subarray(pos - offset, pos - offset + n), this.offsets[b]! + inBlock, this.path);
      if (this.p.type === 'differencing') await this.setSectors(b, inBlock / sector, n / sector);
      pos += n;
    }
  }

  private async setSectors(b: number, first: number, count: number): Promise<void> {
    const chunk = Math.floor(b / this.geo.chunkRatio);
    let bitmap = this.bitmaps.get(chunk);
    if (!bitmap) {
      bitmap = { offset: this.nextFree, bits: new Uint8Array(MIB) };
      this.nextFree += MIB;
      this.bitmaps.set(chunk, bitmap);
    }
    const start = (b - chunk * this.geo.chunkRatio) * (this.p.blockSize / this.p.logical) + first;
    setBitsLsb(bitmap.bits, start, count);
    this.dirtyBitmaps.add(chunk);
  }

  private async readCurrent(offset: number, length: number): Promise<Uint8Array> {
    const bs = this.p.blockSize;
    const b = Math.floor(offset / bs);
    const state = this.states[b];
    if (state === BAT_STATE.zero) return new Uint8Array(length);
    if (state === BAT_STATE.partiallyPresent || state === BAT_STATE.fullyPresent) {
      const chunk = Math.floor(b / this.geo.chunkRatio);
      const s = (b - chunk * this.geo.chunkRatio) * (bs / this.p.logical) + (offset - b * bs) / this.p.logical;
      const bits = this.bitmaps.get(chunk)?.bits;
      if (bits && (bits[s >> 3]! & (1 << (s & 7))) !== 0) {
        const out = new Uint8Array(length);
        await this.handle.read(out, 0, length, this.offsets[b]! + offset - b * bs);
        return out;
      }
    }
    return this.p.parent!.read(offset, length);
  }

  async writeZeroes(offset: number, length: number, options: { signal?: AbortSignal } = {}): Promise<void> {
    checkRange(this.size, offset, length, `writing ${this.path}`);
    const bs = this.p.blockSize;
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      throwIfAborted(options.signal);
      const b = Math.floor(pos / bs);
      const inBlock = pos - b * bs;
      const n = Math.min(bs - inBlock, end - pos);
      const whole = inBlock === 0 && n >= Math.min(bs, this.size - b * bs);
      if (whole && this.p.type !== 'fixed') {
        // a dynamic disk forgets the block; a differencing one marks it zero (hiding the parent's)
        this.states[b] = this.p.type === 'differencing' ? BAT_STATE.zero : BAT_STATE.notPresent;
        this.offsets[b] = 0;
      } else if (this.p.type === 'dynamic' && this.states[b] !== BAT_STATE.fullyPresent) {
        // already reads as zeroes
      } else {
        for (let at = pos; at < pos + n; at += ZERO_MIB.length) {
          await this.write(at, ZERO_MIB.subarray(0, Math.min(ZERO_MIB.length, pos + n - at)), options);
        }
      }
      pos += n;
    }
  }

  private batBytes(): Uint8Array {
    const bytes = new Uint8Array(this.geo.entries * 8);
    const view = new DataView(bytes.buffer);
    const put = (i: number, state: number, offset: number) => {
      const mb = offset / MIB;
      view.setUint32(i * 8, (((mb % 4096) << 20) | state) >>> 0, true);
      view.setUint32(i * 8 + 4, Math.floor(mb / 4096), true);
    };
    for (let b = 0; b < this.geo.dataBlocks; b++) {
      const state = this.states[b]!;
      const present = state === BAT_STATE.fullyPresent || state === BAT_STATE.partiallyPresent;
      put(b + Math.floor(b / this.geo.chunkRatio), state, present ? this.offsets[b]! : 0);
    }
    for (const [chunk, bitmap] of this.bitmaps) {
      put(chunk * (this.geo.chunkRatio + 1) + this.geo.chunkRatio, BAT_STATE.fullyPresent, bitmap.offset);
    }
    return bytes;
  }

  private metadataBytes(): Uint8Array {
    const region = new Uint8Array(64 * 1024 + 64 * 1024);
    const view = new DataView(region.buffer);
    region.set(Buffer.from('metadata', 'latin1'), 0);
    const items: { id: Uint8Array; flags: number; data: Uint8Array }[] = [];
    const u32 = (n: number) => {
      const b = new Uint8Array(4);
      new DataView(b.buffer).setUint32(0, n, true);
      return b;
    };
    const fileParams = new Uint8Array(8);
    new DataView(fileParams.buffer).setUint32(0, this.p.blockSize, true);
    new DataView(fileParams.buffer).setUint32(
      4,
      this.p.type === 'fixed' ? 1 : this.p.type === 'differencing' ? 2 : 0,
      true,
    );
    const sizeItem = new Uint8Array(8);
    new DataView(sizeItem.buffer).setBigUint64(0, BigInt(this.size), true);
    items.push({ id: VHDX_GUID.fileParameters, flags: 4, data: fileParams });
    items.push({ id: VHDX_GUID.virtualDiskSize, flags: 6, data: sizeItem });
    items.push({ id: VHDX_GUID.page83, flags: 6, data: this.diskId });
    items.push({ id: VHDX_GUID.logicalSectorSize, flags: 6, data: u32(this.p.logical) });
    items.push({ id: VHDX_GUID.physicalSectorSize, flags: 6, data: u32(this.p.physical) });
    if (this.p.parent) items.push({ id: VHDX_GUID.parentLocator, flags: 4, data: this.parentLocator(this.p.parent) });
    view.setUint16(10, items.length, true);
    let at = 64 * 1024;
    items.forEach((item, i) => {
      const e = 32 + 32 * i;
      region.set(item.id, e);
      view.setUint32(e + 16, at, true);
      view.setUint32(e + 20, item.data.length, true);
      view.setUint32(e + 24, item.flags, true);
      region.set(item.data, at);
      at += roundUp(item.data.length, 8);
    });
    return region;
  }

  private parentLocator(parent: VhdxReader): Uint8Array {
    const abs = resolve(parent.info.path);
    const rel = relative(dirname(resolve(this.path)), abs).replace(/\//g, '\\');
    const pairs: [string, string][] = [
      ['parent_linkage', `{${formatGuid(parent.header.dataWriteGuid)}}`],
      ['relative_path', `.\\${rel}`],
      ['absolute_win32_path', abs],
    ];
    const encoded = pairs.map(([k, v]) => [Buffer.from(k, 'utf16le'), Buffer.from(v, 'utf16le')] as const);
    const total = 20 + 12 * pairs.length + encoded.reduce((n, [k, v]) => n + k.length + v.length, 0);
    const out = new Uint8Array(total);
    const view = new DataView(out.buffer);
    out.set(VHDX_GUID.vhdxParentType, 0);
    view.setUint16(18, pairs.length, true);
    let data = 20 + 12 * pairs.length;
    encoded.forEach(([k, v], i) => {
      const e = 20 + 12 * i;
      view.setUint32(e, data, true);
      out.set(k, data);
      data += k.length;
      view.setUint32(e + 4, data, true);
      out.set(v, data);
      data += v.length;
      view.setUint16(e + 8, k.length, true);
      view.setUint16(e + 10, v.length, true);
    });
    return out;
  }

  private regionTable(): Uint8Array {
    const t = new Uint8Array(64 * 1024);
    const view = new DataView(t.buffer);
    t.set(Buffer.from('regi', 'latin1'), 0);
    view.setUint32(8, 2, true);
    const entry = (i: number, guid: Uint8Array, offset: number, length: number) => {
      const e = 16 + 32 * i;
      t.set(guid, e);
      view.setBigUint64(e + 16, BigInt(offset), true);
      view.setUint32(e + 24, length, true);
      view.setUint32(e + 28, 1, true);
    };
    entry(0, VHDX_GUID.bat, BAT_OFFSET, this.batLength);
    entry(1, VHDX_GUID.metadata, METADATA_OFFSET, METADATA_LENGTH);
    sealCrc(t, 4);
    return t;
  }

  private header(sequence: number): Uint8Array {
    const h = new Uint8Array(4096);
    const view = new DataView(h.buffer);
    h.set(Buffer.from('head', 'latin1'), 0);
    view.setBigUint64(8, BigInt(sequence), true);
    h.set(this.fileWriteGuid, 16);
    h.set(this.dataWriteGuid, 32);
    view.setUint16(64, 0, true);
    view.setUint16(66, 1, true);
    view.setUint32(68, LOG_LENGTH, true);
    view.setBigUint64(72, BigInt(LOG_OFFSET), true);
    sealCrc(h, 4);
    return h;
  }

  async flush(): Promise<void> {
    for (const chunk of this.dirtyBitmaps) {
      const bitmap = this.bitmaps.get(chunk)!;
      await writeAll(this.handle, bitmap.bits, bitmap.offset, this.path);
    }
    this.dirtyBitmaps.clear();
    if (this.nextFree > 0) {
      await this.handle.truncate(this.nextFree).catch((error) => {
        throw toStorageError(error, `writing ${this.path}`);
      });
    }
    await writeAll(this.handle, this.batBytes(), BAT_OFFSET, this.path);
    if (!this.structuresWritten) {
      const id = new Uint8Array(64 * 1024);
      id.set(Buffer.from('vhdxfile', 'latin1'), 0);
      id.set(Buffer.from('replikit', 'utf16le'), 8);
      await writeAll(this.handle, id, 0, this.path);
      await writeAll(this.handle, this.metadataBytes(), METADATA_OFFSET, this.path);
      const table = this.regionTable();
      await writeAll(this.handle, table, 192 * 1024, this.path);
      await writeAll(this.handle, table, 256 * 1024, this.path);
      await this.sync();
      await writeAll(this.handle, this.header(1), 64 * 1024, this.path);
      await writeAll(this.handle, this.header(2), 128 * 1024, this.path);
      this.structuresWritten = true;
    }
    await this.sync();
  }

  private async sync(): Promise<void> {
    await syncIf(this.p.sync, this.handle, this.path);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    try {
      await this.flush();
    } finally {
      this.closed = true;
      await this.handle.close().catch(() => undefined);
    }
  }
}

/** Sets `count` bits from bit `first`, LSB-first (VHDX order). */
export function setBitsLsb(bitmap: Uint8Array, first: number, count: number): void {
  let i = first;
  const end = first + count;
  while (i < end && (i & 7) !== 0) {
    bitmap[i >> 3]! |= 1 << (i & 7);
    i++;
  }
  if (end - i >= 8) {
    bitmap.fill(0xff, i >> 3, end >> 3);
    i = end & ~7;
  }
  while (i < end) {
    bitmap[i >> 3]! |= 1 << (i & 7);
    i++;
  }
}
