import { AbstractDiskWriter } from '@replikit/core';
import { vhdStream, vhdStreamLength } from '@replikit/formats';
import type { XenConnection } from './xapi/xen-connection.js';

/** The block size of the VHD streams the writer uploads (XAPI's VHD block size). */
export const WRITE_BLOCK = 2 * 1024 * 1024;

/** Reads the VDI being written (blocks written in part are completed from it). */
export interface BlockSource {
  /** Reads `target.length` bytes at `offset`. */
  readInto(offset: number, target: Uint8Array): Promise<void>;
  /** Ends the read (before an upload: XAPI's import needs the VDI free). */
  close(): Promise<void>;
}

/**
 * Writes one pending replica VDI (a clone of the replica disk, swapped in at commit) through
 * XAPI only: written ranges are gathered per 2 MiB block — a block written in part is first read
 * from the VDI — and `flush` uploads the touched blocks as one VHD stream with
 * `PUT /import_raw_vdi?format=vhd`, which writes only the blocks the stream carries.
 * Memory holds every block touched since the last flush.
 */
export class XenReplicaWriter extends AbstractDiskWriter {
  private readonly blocks = new Map<number, Promise<Uint8Array>>();
  private source: BlockSource | undefined;

  constructor(
    private readonly connection: XenConnection,
    private readonly vdiRef: string,
    size: number,
    what: string,
    private readonly openSource: () => BlockSource,
  ) {
    super({ size, what });
  }

  protected async _write(offset: number, data: Uint8Array): Promise<void> {
    await this.apply(offset, data.length, (block, at, from, n) => block.set(data.subarray(from, from + n), at));
  }

  protected async _writeZeroes(offset: number, length: number): Promise<void> {
    await this.apply(offset, length, (block, at, _from, n) => block.fill(0, at, at + n));
  }

  protected override async _flush(): Promise<void> {
    if (this.blocks.size === 0) return;
    const indices = [...this.blocks.keys()].sort((a, b) => a - b);
    const ready = new Map<number, Uint8Array>();
    for (const i of indices) ready.set(i, await this.blocks.get(i)!);
    await this.closeSource();
    const shape = { size: this.size, blockSize: WRITE_BLOCK, blocks: indices };
    const body = vhdStream({ ...shape, readBlock: async (i) => ready.get(i)! });
    await this.connection.put('/import_raw_vdi', { vdi: this.vdiRef, format: 'vhd' }, body, vhdStreamLength(shape));
    for (const i of indices) this.blocks.delete(i);
  }

  protected override async _close(): Promise<void> {
    await this.closeSource();
  }

  private async closeSource(): Promise<void> {
    const source = this.source;
    this.source = undefined;
    await source?.close();
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
      const index = Math.floor(position / WRITE_BLOCK);
      const at = position - index * WRITE_BLOCK;
      const n = Math.min(length - done, WRITE_BLOCK - at);
      edit(await this.block(index), at, done, n);
      done += n;
    }
  }

  private block(index: number): Promise<Uint8Array> {
    let block = this.blocks.get(index);
    if (!block) {
      const length = Math.min(WRITE_BLOCK, this.size - index * WRITE_BLOCK);
      const buffer = new Uint8Array(length);
      this.source ??= this.openSource();
      block = this.source.readInto(index * WRITE_BLOCK, buffer).then(() => buffer);
      this.blocks.set(index, block);
    }
    return block;
  }
}
