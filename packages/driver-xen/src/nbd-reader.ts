import { AbstractDiskReader, type Extent, type OperationOptions } from '@replikit/core';
import type { HttpRawReader } from './http-raw-reader.js';
import type { NbdExport } from './nbd/nbd-export.js';

/**
 * Reads a snapshot VDI over NBD (several connections, reconnect on a drop). The bytes of a last
 * partial sector, which xapi-nbd cannot serve, come from the raw HTTP export.
 */
export class NbdDiskReader extends AbstractDiskReader {
  constructor(
    private readonly nbd: NbdExport,
    private readonly makeTail: () => HttpRawReader,
    private readonly allocation: (signal?: AbortSignal) => Promise<Extent[] | undefined>,
    size: number,
    what: string,
  ) {
    super({ size, blockSize: 65_536, what });
  }

  private tail: HttpRawReader | undefined;

  /** The export (tests cut its connections). */
  get export(): NbdExport {
    return this.nbd;
  }

  protected async _readInto(offset: number, target: Uint8Array, options?: OperationOptions): Promise<void> {
    const aligned = Math.min(this.size, this.nbd.alignedSize);
    const head = Math.max(0, Math.min(target.length, aligned - offset));
    if (head > 0) await this.nbd.readInto(offset, target.subarray(0, head), options?.signal);
    if (head < target.length) {
      this.tail ??= this.makeTail();
      await this.tail.readInto(offset + head, target.subarray(head), options);
    }
  }

  protected override async *_allocated(options?: OperationOptions): AsyncIterable<Extent> {
    const extents = await this.allocation(options?.signal);
    if (extents) yield* extents;
    else yield { offset: 0, length: this.size };
  }

  protected override async _close(): Promise<void> {
    this.nbd.close();
    await this.tail?.close();
  }
}
