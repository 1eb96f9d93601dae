import type { DiskRef, OperationOptions } from './disk.js';
import type { Replica } from './hypervisor.js';

/**
 * One block operation of a session. Blocks are numbered from 0 in units of the session's block
 * size; the last block of a disk may be shorter.
 */
export type BlockOp =
  | {
      kind: 'data';
      /** Block index. */
      index: number;
      /** The block's bytes: exactly the block's length. */
      data: Uint8Array;
      /** The digest of `data` with the session's algorithm, checked by the target when given. */
      digest?: Uint8Array;
    }
  | {
      kind: 'zero';
      /** First block index. */
      index: number;
      /** Number of consecutive blocks that read as zero. */
      count: number;
    };

/**
 * A changed block offered to {@link DiskChannel.sendDelta}, with the block the source believes the
 * replica holds at that index (its digest matched the replica's). The channel decides how the
 * block travels: as the difference from `base` in its own wire format, or whole when the
 * difference is not worth it.
 */
export interface DeltaOp {
  /** Block index. */
  index: number;
  /** The new block: exactly the block's length. */
  block: Uint8Array;
  /**
   * The block the replica holds at `index` (same length as `block`), or `null` when the replica's
   * block reads as all zeros.
   */
  base: Uint8Array | null;
  /** The digest of the new block, checked by the target after applying. */
  digest?: Uint8Array;
}

/** How {@link DiskChannel.sendDelta} sent a block. */
export interface DeltaSent {
  /** True when the block went as a difference from its base, false when it went whole. */
  delta: boolean;
  /** Payload bytes put on the wire for the block (the delta's or the block's), for throttling. */
  bytes: number;
}

/** The digest of one replica block, or `null` when the block reads as all zeros. */
export interface BlockDigest {
  /** Block index. */
  index: number;
  /** The digest with the session's algorithm, or `null` for an all-zero block. */
  digest: Uint8Array | null;
}

/** What a session is about. Plain data, sent to the target side when the session opens. */
export interface SessionSpec {
  /** The run the session serves. */
  runId: string;
  /** The replica being written. */
  replica: Replica;
  /** Block size in bytes. */
  blockSize: number;
  /** Digest algorithm name for block digests (`sha256`, `xxh128`, …). */
  digest: string;
}

/** One disk's stream inside a {@link BlockChannel}. */
export interface DiskChannel {
  /** The replica disk. */
  readonly disk: DiskRef;
  /**
   * Digests of the replica's blocks from `fromBlock` to the end, in order, computed on the target
   * side (a verified diff never ships replica data to the source).
   */
  replicaDigests(fromBlock: number, options?: OperationOptions): AsyncIterable<BlockDigest>;
  /**
   * Sends an operation. Resolves once the channel has room for more (back-pressure): awaiting
   * every call keeps memory bounded. Operations must be sent in ascending block order.
   */
  send(op: BlockOp, options?: OperationOptions): Promise<void>;
  /**
   * Waits until every operation sent so far is durable on the target and returns the number of
   * blocks from the start of the disk below which everything sent is durable.
   */
  checkpoint(options?: OperationOptions): Promise<number>;
  /**
   * True when the channel is done with a data op's bytes once `send` resolves (it wrote or copied
   * them), so the engine may reuse the buffer. A channel that keeps blocks for a resend after a
   * reconnect leaves it unset.
   */
  readonly releasesDataOnSend?: boolean;
  /**
   * Optional: sends a changed block given the replica's current block, so the channel may send
   * only the difference; same ordering, back-pressure and buffer rules as a data op of `send`
   * (`block` and `base` may be reused once it resolves when `releasesDataOnSend` is set).
   * Resolves to the payload bytes it put on the wire for the block, and whether they are a
   * delta (`false`: the difference was not worth it and the block went whole). A delta costs the
   * engine one read of the previous snapshot's block, so only channels over a slow link offer it;
   * channels without it receive whole blocks and the previous snapshot is never read.
   */
  sendDelta?(op: DeltaOp, options?: OperationOptions): Promise<DeltaSent>;
  /**
   * How many `send`/`sendDelta` calls may be pending at once: a caller may start the next one
   * before the previous has resolved, up to this many, still in ascending block order. Unset: one
   * at a time. `checkpoint` may be called only when none is pending.
   */
  readonly maxPendingSends?: number;
  /** Payload and framing bytes that crossed (or would cross) the wire so far. */
  readonly bytesSent: number;
  /** Bytes written to the replica disk so far. */
  readonly bytesWritten: number;
  /** Makes everything durable and closes the disk stream. */
  close(options?: OperationOptions): Promise<void>;
}

/** A session between a source side and a target side. */
export interface BlockChannel {
  /** Opens the stream of one replica disk. */
  openDisk(disk: DiskRef, options?: OperationOptions): Promise<DiskChannel>;
  /** Ends the session, releasing everything on both sides. */
  close(): Promise<void>;
}

/** Opens sessions: in-process, or over the network to an agent. */
export interface Transport {
  /** A short name for logs: `inprocess`, `tcp`, `tls`. */
  readonly name: string;
  /** Opens a session. */
  open(session: SessionSpec, options?: OperationOptions): Promise<BlockChannel>;
}
