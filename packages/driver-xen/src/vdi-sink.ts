/**
 * Where a replica writer's bytes go: one VDI (a pending clone of a replica disk). The writer
 * checks ranges against the source disk's size and never passes a byte beyond it; the clone and
 * swap logic (xen-target.ts) does not depend on how the bytes travel. The HTTP sink
 * ({@link HttpVdiSink}) uploads through XAPI; an ABD sink would write through the target
 * appliance's agent.
 */
export interface VdiSink {
  /** Writes `bytes` at `offset` of the VDI; may buffer until {@link VdiSink.flush}. */
  write(offset: number, bytes: Uint8Array): Promise<void>;
  /** Makes `[offset, offset + length)` read as zero; may buffer until {@link VdiSink.flush}. */
  writeZeroes(offset: number, length: number): Promise<void>;
  /** Makes every write that resolved durable in the VDI. */
  flush(): Promise<void>;
  /** Releases what the sink holds; writes not flushed are discarded. */
  close(): Promise<void>;
  /** Discards the writes not flushed and releases at once (a failed or cancelled run). */
  abort(): Promise<void>;
}

/** What a {@link VdiSinkFactory} is told about the VDI to write. */
export interface VdiSinkTarget {
  /** The VDI's ref. */
  vdiRef: string;
  /** The VDI's `virtual_size` (the SR may have rounded it above the source's size). */
  vdiSize: number;
  /** What is written, for messages. */
  what: string;
  /** Cancels the sink's calls. */
  signal?: AbortSignal | undefined;
}

/** Makes the sink of one pending VDI. */
export type VdiSinkFactory = (target: VdiSinkTarget) => VdiSink | Promise<VdiSink>;
