import type { BlockDigest } from '../../contracts/transport.js';
import { TransportError } from '../../errors.js';
import type { DigestRecorder } from './digest-recorder.js';

/**
 * Where the compare step finds the replica's digests, chosen once at the boundary:
 * - `stream`: walked block by block from the checkpoint on (the target reads its replica, or a
 *   cache is read page by page);
 * - `entries`: a segment's digests copied at once (a cache's `copyEntries`); never with
 *   `unchangedOutsideRanges`;
 * - `random`: a tracked block's digest looked up (a cache's `digestAt`), the unchanged blocks
 *   between them copied in bulk into the new cache (`carry`).
 */
export type DigestSource =
  | { kind: 'stream'; digests: AsyncIterable<BlockDigest> }
  | { kind: 'entries'; copyEntries(target: Uint8Array, from: number, count: number): Promise<void> }
  | {
      kind: 'random';
      digestAt(index: number): Promise<Uint8Array | null>;
      carry(from: number, to: number): Promise<void>;
    };

/** The replica's digest of block `first + i` of a segment (`null`: the replica's block is zeros). */
export type SegmentDigests = (i: number) => Uint8Array | null | Promise<Uint8Array | null>;

/**
 * The compare step's input: the replica's digests, in block order, counted as replica reads when
 * the target reads its replica for them (`countReads`). With `carry`, the blocks outside the
 * tracked ranges did not change: their digests go to the new cache as they are, unread.
 */
export class ReplicaDigests {
  private readonly iterator: AsyncIterator<BlockDigest> | undefined;
  private cursor: number;
  private scratch = new Uint8Array(0);

  constructor(
    private readonly source: DigestSource,
    private readonly disk: {
      from: number;
      size: number;
      blockSize: number;
      digestLength: number;
      carry: boolean;
      countReads: (bytes: number) => void;
      recorder: DigestRecorder | undefined;
    },
  ) {
    this.iterator = source.kind === 'stream' ? source.digests[Symbol.asyncIterator]() : undefined;
    this.cursor = disk.from;
  }

  /** True when the digests are walked (or looked up) a block at a time, not copied a segment at a time. */
  get walksBlocks(): boolean {
    return this.source.kind !== 'entries';
  }

  /** Carries the digests of the unchanged blocks below `end` into the new cache, then skips to `next`. */
  async carryTo(end: number, next = end): Promise<void> {
    if (this.disk.carry) {
      if (this.source.kind === 'random') {
        if (end > this.cursor) await this.source.carry(this.cursor, end);
      } else {
        for (; this.cursor < end; this.cursor++) {
          await this.disk.recorder?.block(this.cursor, await this.next(this.cursor));
        }
      }
    }
    this.cursor = Math.max(this.cursor, next);
  }

  /** The replica's digests of the blocks `[first, first + count)`. */
  async segment(first: number, count: number): Promise<SegmentDigests> {
    if (this.source.kind === 'entries') {
      const length = this.disk.digestLength;
      if (this.scratch.length < count * length) this.scratch = new Uint8Array(count * length);
      const entries = this.scratch.subarray(0, count * length);
      await this.source.copyEntries(entries, first, count);
      this.disk.countReads(Math.min(count * this.disk.blockSize, this.disk.size - first * this.disk.blockSize));
      return (i) => entryAt(entries, i, length);
    }
    return (i) => this.next(first + i);
  }

  /** Ends the walk of the replica's digests. */
  async close(): Promise<void> {
    await this.iterator?.return?.();
  }

  private async next(index: number): Promise<Uint8Array | null> {
    if (this.source.kind === 'random') return this.source.digestAt(index);
    const next = await this.iterator!.next();
    if (next.done || next.value.index !== index) {
      throw new TransportError(
        `the replica's digest of block ${next.done ? 'none' : next.value.index} came where block ${index} was expected`,
      );
    }
    this.disk.countReads(Math.min(this.disk.blockSize, this.disk.size - index * this.disk.blockSize));
    return next.value.digest;
  }
}

/** Entry `i` of back-to-back digests (a view), or `null` when it is all zero bytes (a zero block). */
export function entryAt(entries: Uint8Array, i: number, digestLength: number): Uint8Array | null {
  const start = i * digestLength;
  for (let at = start; at < start + digestLength; at++) {
    if (entries[at] !== 0) return entries.subarray(start, start + digestLength);
  }
  return null;
}
