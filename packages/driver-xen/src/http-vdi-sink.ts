import { vhdStream, vhdStreamLength } from '@replikit/formats';
import { HttpRawReader } from './http-raw-reader.js';
import type { VdiSink, VdiSinkTarget } from './vdi-sink.js';
import type { XenConnection } from './xapi/xen-connection.js';

/** The block size of the VHD streams the sink uploads (XAPI's VHD block size). */
export const WRITE_BLOCK = 2 * 1024 * 1024;

/** Blocks held before the sink uploads on its own (64 MiB of memory). */
const MAX_HELD_BLOCKS = 32;

/** Reads the VDI being written (blocks written in part are completed from it). */
export interface BlockSource {
  /** Reads `target.length` bytes at `offset`. */
  readInto(offset: number, target: Uint8Array): Promise<void>;
  /** Ends the read (before an upload: XAPI's import needs the VDI free). */
  close(): Promise<void>;
}

/**
 * A {@link VdiSink} through XAPI only: written ranges are gathered per 2 MiB block (or the
 * block size given) — a block
 * written in part is first read from the VDI (`GET /export_raw_vdi`) — and `flush` uploads the
 * touched blocks as one VHD stream with `PUT /import_raw_vdi?format=vhd`, which writes only the
 * blocks the stream carries. Memory holds the blocks touched since the last upload: past 32
 * (64 MiB) the sink uploads them on its own, new writes waiting for that upload. A VHD
 * covers whole 512-byte sectors: the stream's last block ends at the VDI's size rounded up to
 * one, and XAPI writes no byte past the VDI's end.
 */
export class HttpVdiSink implements VdiSink {
  private readonly blocks = new Map<number, Promise<Uint8Array>>();
  private source: Promise<BlockSource> | undefined;
  private readonly streamSize: number;
  /** Writes between their start and their last edit (an upload waits for them). */
  private editing = 0;
  private edited: (() => void) | undefined;
  /** The upload in progress, which new writes wait for. */
  private uploading: Promise<void> | undefined;

  constructor(
    private readonly connection: XenConnection,
    private readonly target: VdiSinkTarget,
    private readonly openSource: () => BlockSource | Promise<BlockSource> = () =>
      new HttpRawReader(connection, target.vdiRef, target.vdiSize, target.what),
    /**
     * The VHD block size of the uploads (a power of two, at least 512). XAPI's CBT marks every
     * 64 KiB the uploaded blocks cover, so a writer whose writes must stay tracked block for block
     * (reverse replication onto an original VM) uploads 64 KiB blocks.
     */
    private readonly blockSize: number = WRITE_BLOCK,
  ) {
    this.streamSize = Math.ceil(target.vdiSize / 512) * 512;
  }

  async write(offset: number, bytes: Uint8Array): Promise<void> {
    await this.edit(offset, bytes.length, (block, at, from, n) => block.set(bytes.subarray(from, from + n), at));
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    await this.edit(offset, length, (block, at, _from, n) => block.fill(0, at, at + n));
  }

  async flush(): Promise<void> {
    while (this.uploading) await this.uploading.catch(() => undefined);
    await this.upload();
  }

  /** Runs one write: waits for an upload in progress, edits, and uploads when too much is held. */
  private async edit(
    offset: number,
    length: number,
    change: (block: Uint8Array, at: number, from: number, n: number) => void,
  ): Promise<void> {
    while (this.uploading) await this.uploading;
    this.editing++;
    try {
      await this.apply(offset, length, change);
    } finally {
      if (--this.editing === 0) this.edited?.();
    }
    if (this.blocks.size >= MAX_HELD_BLOCKS && !this.uploading) {
      const quiet = this.editing === 0 ? Promise.resolve() : new Promise<void>((resolve) => (this.edited = resolve));
      this.uploading = quiet.then(() => this.upload());
      try {
        await this.uploading;
      } finally {
        this.uploading = undefined;
        this.edited = undefined;
      }
    }
  }

  /** Uploads the blocks held (no write edits them meanwhile). */
  private async upload(): Promise<void> {
    if (this.blocks.size === 0) return;
    const indices = [...this.blocks.keys()].sort((a, b) => a - b);
    const ready = new Map<number, Uint8Array>();
    for (const i of indices) ready.set(i, await this.blocks.get(i)!);
    await this.closeSource();
    const shape = { size: this.streamSize, blockSize: this.blockSize, blocks: indices };
    const body = vhdStream({ ...shape, readBlock: async (i) => ready.get(i)! });
    await this.connection.put(
      '/import_raw_vdi',
      { vdi: this.target.vdiRef, format: 'vhd' },
      body,
      vhdStreamLength(shape),
      this.target.signal,
    );
    for (const i of indices) this.blocks.delete(i);
  }

  async close(): Promise<void> {
    this.blocks.clear();
    await this.closeSource();
  }

  async abort(): Promise<void> {
    await this.close();
  }

  private async closeSource(): Promise<void> {
    const source = this.source;
    this.source = undefined;
    if (source) await (await source.catch(() => undefined))?.close();
  }

  /** Runs `edit` on each block piece of `[offset, offset + length)`. */
  private async apply(
    offset: number,
    length: number,
    edit: (block: Uint8Array, at: number, from: number, n: number) => void,
  ): Promise<void> {
    let done = 0;
    while (done < length) {
      const position = offset + done;
      const index = Math.floor(position / this.blockSize);
      const at = position - index * this.blockSize;
      const n = Math.min(length - done, this.blockSize - at);
      edit(await this.block(index), at, done, n);
      done += n;
    }
  }

  /** Block `index` as the VDI holds it, read once; its bytes past the VDI's end stay zero. */
  private block(index: number): Promise<Uint8Array> {
    let block = this.blocks.get(index);
    if (!block) {
      const start = index * this.blockSize;
      const buffer = new Uint8Array(Math.min(this.blockSize, this.streamSize - start));
      this.source ??= Promise.resolve(this.openSource());
      const inside = Math.max(0, Math.min(buffer.length, this.target.vdiSize - start));
      block = this.source.then((source) => source.readInto(start, buffer.subarray(0, inside))).then(() => buffer);
      this.blocks.set(index, block);
    }
    return block;
  }
}
