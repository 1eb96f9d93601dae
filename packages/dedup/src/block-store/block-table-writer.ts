import type { FileHandle } from 'node:fs/promises';
import { toStorageError } from '@replikit/core';
import { ADDRESS_BYTES } from './store-paths.js';
import { writeAll } from './write-all.js';

/** Entries of consecutive blocks gathered before they are written in one call. */
const RUN_ENTRIES = 2048;

/**
 * Writes the entries (32-byte addresses) of a pending version's block table: entries of consecutive
 * blocks are gathered and written together (one positional write per run of up to 2,048 blocks
 * instead of one per block), and whatever is gathered is written by {@link BlockTableWriter.flush},
 * which the version calls before it makes the table durable (at every checkpoint and at close).
 */
export class BlockTableWriter {
  private readonly run = Buffer.allocUnsafe(RUN_ENTRIES * ADDRESS_BYTES);
  private first = 0;
  private count = 0;

  constructor(
    readonly handle: FileHandle,
    readonly blockCount: number,
    private readonly disk: string,
  ) {}

  /** Records `address` (32 bytes) as block `index`'s entry. */
  set(index: number, address: Uint8Array): void {
    if (this.count > 0 && (index !== this.first + this.count || this.count === RUN_ENTRIES)) this.flush();
    if (this.count === 0) this.first = index;
    this.run.set(address, this.count * ADDRESS_BYTES);
    this.count++;
  }

  /** Writes the gathered entries into the table file (not yet durable: the caller syncs it). */
  flush(): void {
    if (this.count === 0) return;
    const bytes = this.count * ADDRESS_BYTES;
    try {
      writeAll(this.handle.fd, [this.run.subarray(0, bytes)], bytes, this.first * ADDRESS_BYTES);
    } catch (error) {
      throw toStorageError(
        error,
        `recording blocks ${this.first}+${this.count} of disk '${this.disk}' in the backup version`,
      );
    }
    this.count = 0;
  }
}
