import { AbstractDiskWriter } from '@replikit/core';
import type { VdiSink } from './vdi-sink.js';

/**
 * Writes one pending replica VDI (a clone of the replica disk, swapped in at commit) through a
 * {@link VdiSink}. The writer's size is the source disk's: ranges past it are refused
 * (`E_INPUT`), even where the SR rounded the VDI up.
 */
export class XenReplicaWriter extends AbstractDiskWriter {
  private flushedOk = true;

  constructor(
    private readonly sink: VdiSink,
    size: number,
    what: string,
  ) {
    super({ size, what });
  }

  protected async _write(offset: number, data: Uint8Array): Promise<void> {
    await this.sink.write(offset, data);
  }

  protected async _writeZeroes(offset: number, length: number): Promise<void> {
    await this.sink.writeZeroes(offset, length);
  }

  protected override async _flush(): Promise<void> {
    this.flushedOk = false;
    await this.sink.flush();
    this.flushedOk = true;
  }

  protected override async _close(): Promise<void> {
    // After a failed flush (or a failed write, which skips the last flush) nothing half-made stays.
    if (this.flushedOk) await this.sink.close();
    else await this.sink.abort();
  }
}
