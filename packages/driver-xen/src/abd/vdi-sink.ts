import type { OperationOptions } from '@replikit/core';

/**
 * Bytes into one VDI: what the Xen target side writes a replica disk through, whatever carries
 * the bytes (XAPI's `/import_raw_vdi`, or the target appliance's agent). Writes are accepted in
 * ascending order; `flush` makes every write so far durable; `close` flushes and ends; `abort`
 * ends without the promise that anything not flushed landed.
 */
export interface VdiSink {
  /** The VDI's virtual size in bytes. */
  readonly size: number;
  /** Writes `data` at `offset` (inside the VDI, at or after the end of the previous write). */
  write(offset: number, data: Uint8Array, options?: OperationOptions): Promise<void>;
  /** Makes `[offset, offset + length)` read as zero (same ordering rule as `write`). */
  writeZeroes(offset: number, length: number, options?: OperationOptions): Promise<void>;
  /** Makes every write so far durable. */
  flush(options?: OperationOptions): Promise<void>;
  /** Flushes and releases the sink. Calling it twice is harmless. */
  close(): Promise<void>;
  /** Releases the sink without flushing (a failed run). Calling it after `close` is harmless. */
  abort(): Promise<void>;
}
