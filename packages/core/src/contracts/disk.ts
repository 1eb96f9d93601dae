/** Options accepted by every operation that can take time. */
export interface OperationOptions {
  /** Cancels the operation; it then rejects with an `E_ABORTED` error and releases what it holds. */
  signal?: AbortSignal;
}

/** A byte range of a disk: `[offset, offset + length)`. */
export interface Extent {
  /** First byte, from the start of the disk. */
  offset: number;
  /** Number of bytes; always greater than zero. */
  length: number;
}

/**
 * Where a run of a disk's bytes lies in a local file: see {@link DiskReader.fileSpans}.
 */
export interface FileSpan {
  /** A file descriptor the reader holds open; valid until the reader is closed. */
  fd: number;
  /** Byte position of the run in that file. */
  position: number;
  /** Number of bytes; greater than zero. */
  length: number;
  /** The file's path, for error messages. */
  path: string;
}

/**
 * Names one disk of a VM, of a snapshot or of a replica. It is plain data: it survives
 * `JSON.stringify`/`JSON.parse` and can be handed back to the driver after a restart.
 */
export interface DiskRef {
  /** The disk's id, stable within its VM (a VDI uuid, a VHDX path, a file-driver disk id). */
  id: string;
  /** The id of the VM or replica the disk belongs to. */
  vmId: string;
  /** Set when the disk is a snapshot's frozen view of a VM disk. */
  snapshotId?: string;
  /** Virtual size in bytes. */
  size: number;
  /** A human-readable name. */
  label?: string;
  /** Driver-specific data the driver needs to find the disk again (kept opaque by the engine). */
  meta?: Record<string, unknown>;
}

/**
 * Reads a disk. Offsets and lengths are bytes and need not be aligned to anything.
 * A reader sees one point-in-time image: a snapshot disk never changes under it.
 */
export interface DiskReader {
  /** Virtual size in bytes. */
  readonly size: number;
  /** The natural granularity of the underlying storage (allocation unit), a power of two. */
  readonly blockSize: number;
  /**
   * The extents that may hold data, in ascending order, not overlapping, inside `[0, size)`.
   * Every byte outside them reads as zero. A driver that cannot tell yields one extent covering
   * the whole disk.
   */
  allocated(options?: OperationOptions): AsyncIterable<Extent>;
  /** Reads `length` bytes at `offset`; the range must lie inside the disk. */
  read(offset: number, length: number, options?: OperationOptions): Promise<Uint8Array>;
  /**
   * Optional: reads `target.length` bytes at `offset` into `target`, so the engine can reuse its
   * buffers (fresh memory for every read costs page faults). Same rules as {@link DiskReader.read}.
   */
  readInto?(offset: number, target: Uint8Array, options?: OperationOptions): Promise<void>;
  /**
   * Optional, for a reader whose bytes lie in local files (a raw image, a chain of snapshot
   * layers): the file ranges `[offset, offset + length)` reads from, in order, covering it exactly.
   * A hasher that reads files on its own threads (the dedup package's pool) then reads and hashes
   * a range there, in parallel, and the bytes never cross the caller's thread unless they are
   * sent. Same range rules as {@link DiskReader.read}. The descriptors are the reader's own: they
   * stay valid until it is closed, and the caller must not close it while such reads run.
   */
  fileSpans?(offset: number, length: number): FileSpan[];
  /** Releases the reader. Calling it twice is harmless. */
  close(): Promise<void>;
}

/**
 * Writes a replica disk. Writes become durable at {@link DiskWriter.flush}. A driver that keeps
 * restore points holds the writes of an unfinished run apart from the last restore point, so that
 * `revertTo` can drop them.
 */
export interface DiskWriter {
  /** Virtual size in bytes. */
  readonly size: number;
  /**
   * Writes `data` at `offset`; the range must lie inside the disk. Callers may keep several
   * writes (and zero writes) in flight at once on ranges that do not overlap; a writer must
   * accept that (the network agent does it), and `flush` covers every write that resolved.
   */
  write(offset: number, data: Uint8Array, options?: OperationOptions): Promise<void>;
  /** Makes `[offset, offset + length)` read as zero, deallocating it where the storage can. */
  writeZeroes(offset: number, length: number, options?: OperationOptions): Promise<void>;
  /** Makes every write so far durable (survives a crash of the process or of the host). */
  flush(options?: OperationOptions): Promise<void>;
  /** Flushes and releases the writer. Calling it twice is harmless. */
  close(): Promise<void>;
}
