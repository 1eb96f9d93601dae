import { type FileHandle, open } from 'node:fs/promises';
import { basename } from 'node:path';
import { type DiskWriter, InputError, throwIfAborted, toStorageError } from '@replikit/core';
import { checkRange } from '@replikit/core/internal';
import { ZERO_MIB } from '../byte-source.js';
import { syncIf, writeAll } from '../file-io.js';
import { randomGuid } from '../guid.js';
import type { ImageReader } from '../image.js';
import { VHD_DEFAULT_BLOCK_SIZE, type VhdLayout, type VhdParentRef, vhdLayout } from './vhd-layout.js';
import type { VhdReader } from './vhd-reader.js';
import { buildVhdFooter, buildVhdHeader, VHD_BAT_FREE, VHD_TYPE } from './vhd-structs.js';

/** Options of {@link createVhd}. */
export interface CreateVhdOptions {
  /** Virtual size in bytes (rounded up to a multiple of 512). */
  size: number;
  /**
   * `fixed` (raw data then a footer), `dynamic` (sparse) or `differencing` (needs `parent`).
   * @default 'dynamic'
   */
  type?: 'fixed' | 'dynamic' | 'differencing';
  /**
   * Block size of a dynamic or differencing disk.
   * @default 2 MiB (the only size Windows accepts)
   */
  blockSize?: number;
  /** The parent of a differencing disk: an opened VHD reader. Sectors not written read from it. */
  parent?: VhdReader;
  /**
   * fsync the file in `flush()` and `close()`, so the image survives a crash of the host. Turn it
   * off for scratch images (qemu-img convert does not sync by default either).
   * @default true
   */
  sync?: boolean;
}

/** A writer of a new VHD file; `close()` writes the BAT and the footers. */
export interface VhdWriter extends DiskWriter {
  /** The file being written. */
  readonly path: string;
}

/** The reference a differencing VHD records for `parent`. */
export function vhdParentRef(parent: VhdReader): VhdParentRef {
  return { path: parent.info.path, uniqueId: parent.footer.uniqueId, timestamp: parent.footer.timestamp };
}

/**
 * Creates a VHD file (replacing any file at `path`) and returns a writer for it. Writes may come
 * in any order and alignment; blocks are allocated on first write and the file stays sparse.
 *
 * @example
 * ```ts
 * const w = await createVhd('/tmp/disk.vhd', { size: 64 * 2 ** 20 });
 * await w.write(0, new Uint8Array(4096).fill(1));
 * await w.close();
 * ```
 */
export async function createVhd(path: string, options: CreateVhdOptions): Promise<VhdWriter> {
  const type = options.type ?? (options.parent ? 'differencing' : 'dynamic');
  if (type === 'differencing' && !options.parent) throw new InputError('a differencing VHD needs a parent');
  if (type !== 'differencing' && options.parent) throw new InputError(`a ${type} VHD has no parent`);
  const parent = options.parent;
  if (parent && parent.size !== options.size) {
    throw new InputError(`the child's size ${options.size} differs from the parent's ${parent.size}`);
  }
  const layout = vhdLayout(
    options.size,
    options.blockSize ?? VHD_DEFAULT_BLOCK_SIZE,
    path,
    parent ? vhdParentRef(parent) : undefined,
  );
  let handle: FileHandle;
  try {
    handle = await open(path, 'w+');
  } catch (error) {
    throw toStorageError(error, `creating ${path}`);
  }
  if (type === 'fixed') return new FixedVhdWriter(path, handle, layout.size, options.sync ?? true);
  return new DynamicVhdWriter(path, handle, layout, parent, options.sync ?? true);
}

class FixedVhdWriter implements VhdWriter {
  private closed = false;
  private readonly uniqueId = randomGuid();
  constructor(
    readonly path: string,
    private readonly handle: FileHandle,
    readonly size: number,
    private readonly sync: boolean,
  ) {}
  async write(offset: number, data: Uint8Array, options: { signal?: AbortSignal } = {}): Promise<void> {
    checkRange(this.size, offset, data.length, `writing ${this.path}`);
    throwIfAborted(options.signal);
    await writeAll(this.handle, data, offset, this.path);
  }
  async writeZeroes(offset: number, length: number, options: { signal?: AbortSignal } = {}): Promise<void> {
    checkRange(this.size, offset, length, `writing ${this.path}`);
    for (let at = offset; at < offset + length; at += ZERO_MIB.length) {
      throwIfAborted(options.signal);
      await writeAll(this.handle, ZERO_MIB.subarray(0, Math.min(ZERO_MIB.length, offset + length - at)), at, this.path);
    }
  }
  async flush(): Promise<void> {
    const footer = buildVhdFooter({
      diskType: VHD_TYPE.fixed,
      size: this.size,
      uniqueId: this.uniqueId,
      dataOffset: 0xffffffffffffffffn,
    });
    await writeAll(this.handle, footer, this.size, this.path);
    await syncIf(this.sync, this.handle, this.path);
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

class DynamicVhdWriter implements VhdWriter {
  readonly size: number;
  private readonly bat: Uint32Array;
  private readonly bitmaps = new Map<number, Uint8Array>();
  private readonly dirty = new Set<number>();
  private nextFree: number;
  private readonly uniqueId = randomGuid();
  private closed = false;
  private headerWritten = false;

  constructor(
    readonly path: string,
    private readonly handle: FileHandle,
    private readonly layout: VhdLayout,
    private readonly parent: ImageReader | undefined,
    private readonly sync: boolean,
  ) {
    this.size = layout.size;
    this.bat = new Uint32Array(layout.entries).fill(VHD_BAT_FREE);
    this.nextFree = layout.dataStart;
  }

  private dataOffset(b: number): number {
    return this.bat[b]! * 512 + this.layout.bitmapSize;
  }

  private allocate(b: number): void {
    this.bat[b] = this.nextFree / 512;
    this.nextFree += this.layout.bitmapSize + this.layout.blockSize;
    const bitmap = new Uint8Array(this.layout.bitmapSize);
    if (!this.parent) bitmap.fill(0xff);
    this.bitmaps.set(b, bitmap);
    this.dirty.add(b);
  }

  async write(offset: number, data: Uint8Array, options: { signal?: AbortSignal } = {}): Promise<void> {
    checkRange(this.size, offset, data.length, `writing ${this.path}`);
    throwIfAborted(options.signal);
    if (this.parent && (offset % 512 !== 0 || data.length % 512 !== 0)) {
      // a differencing disk stores whole sectors: complete the edges from the current content
      const start = Math.floor(offset / 512) * 512;
      const end = Math.min(this.size, Math.ceil((offset + data.length) / 512) * 512);
      const whole = new Uint8Array(end - start);
      whole.set(await this.readCurrent(start, 512), 0);
      if (end - start > 512) whole.set(await this.readCurrent(end - 512, 512), end - start - 512);
      whole.set(data, offset - start);
      return this.write(start, whole, options);
    }
    const bs = this.layout.blockSize;
    let pos = offset;
    const end = offset + data.length;
    while (pos < end) {
      const b = Math.floor(pos / bs);
      const inBlock = pos - b * bs;
      const n = Math.min(bs - inBlock, end - pos);
      if (this.bat[b] === VHD_BAT_FREE) this.allocate(b);
      await writeAll(
        this.handle,
        data.subarray(pos - offset, pos - offset + n),
        this.dataOffset(b) + inBlock,
        this.path,
      );
      if (this.parent) {
        setBitsMsb(this.bitmaps.get(b)!, inBlock / 512, n / 512);
        this.dirty.add(b);
      }
      pos += n;
    }
  }

  /** The current content of a sector-aligned range (this file's sectors, else the parent's). */
  private async readCurrent(offset: number, length: number): Promise<Uint8Array> {
    const bs = this.layout.blockSize;
    const b = Math.floor(offset / bs);
    const sector = (offset - b * bs) / 512;
    const bitmap = this.bitmaps.get(b);
    if (this.bat[b] !== VHD_BAT_FREE && bitmap && (bitmap[sector >> 3]! & (0x80 >> (sector & 7))) !== 0) {
      const out = new Uint8Array(length);
      await this.handle.read(out, 0, length, this.dataOffset(b) + offset - b * bs);
      return out;
    }
    return this.parent!.read(offset, length);
  }

  async writeZeroes(offset: number, length: number, options: { signal?: AbortSignal } = {}): Promise<void> {
    checkRange(this.size, offset, length, `writing ${this.path}`);
    const bs = this.layout.blockSize;
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      throwIfAborted(options.signal);
      const b = Math.floor(pos / bs);
      const inBlock = pos - b * bs;
      const n = Math.min(bs - inBlock, end - pos, ZERO_MIB.length);
      if (this.parent) {
        await this.write(pos, ZERO_MIB.subarray(0, n), options);
      } else if (this.bat[b] !== VHD_BAT_FREE) {
        const blockEnd = Math.min(bs, this.size - b * bs);
        if (inBlock === 0 && n >= blockEnd) {
          this.bat[b] = VHD_BAT_FREE; // its space is left unused
          this.bitmaps.delete(b);
          this.dirty.delete(b);
        } else {
          await writeAll(this.handle, ZERO_MIB.subarray(0, n), this.dataOffset(b) + inBlock, this.path);
        }
      }
      pos += n;
    }
  }

  async flush(): Promise<void> {
    const l = this.layout;
    for (const b of this.dirty) await writeAll(this.handle, this.bitmaps.get(b)!, this.bat[b]! * 512, this.path);
    this.dirty.clear();
    const bat = new Uint8Array(Math.ceil((l.entries * 4) / 512) * 512).fill(0xff);
    const view = new DataView(bat.buffer);
    for (let b = 0; b < l.entries; b++) view.setUint32(b * 4, this.bat[b]!, false);
    await writeAll(this.handle, bat, l.tableOffset, this.path);
    if (!this.headerWritten) {
      const parent = this.parent as VhdReader | undefined;
      const header = buildVhdHeader({
        tableOffset: l.tableOffset,
        maxTableEntries: l.entries,
        blockSize: l.blockSize,
        ...(parent
          ? {
              parent: {
                uniqueId: parent.footer.uniqueId,
                timestamp: parent.footer.timestamp,
                name: basename(parent.info.path),
                locators: l.locators,
              },
            }
          : {}),
      });
      await writeAll(this.handle, header, 512, this.path);
      for (const d of l.locatorData) await writeAll(this.handle, d.bytes, d.offset, this.path);
      this.headerWritten = true;
    }
    const footer = buildVhdFooter({
      diskType: this.parent ? VHD_TYPE.differencing : VHD_TYPE.dynamic,
      size: this.size,
      uniqueId: this.uniqueId,
      dataOffset: 512n,
    });
    await writeAll(this.handle, footer, 0, this.path);
    await writeAll(this.handle, footer, this.nextFree, this.path);
    await this.handle.truncate(this.nextFree + 512).catch((error) => {
      throw toStorageError(error, `writing ${this.path}`);
    });
    await syncIf(this.sync, this.handle, this.path);
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

/** Sets `count` bits from bit `first`, MSB-first (VHD order). */
export function setBitsMsb(bitmap: Uint8Array, first: number, count: number): void {
  let i = first;
  const end = first + count;
  while (i < end && (i & 7) !== 0) {
    bitmap[i >> 3]! |= 0x80 >> (i & 7);
    i++;
  }
  if (end - i >= 8) {
    bitmap.fill(0xff, i >> 3, end >> 3);
    i = end & ~7;
  }
  while (i < end) {
    bitmap[i >> 3]! |= 0x80 >> (i & 7);
    i++;
  }
}
