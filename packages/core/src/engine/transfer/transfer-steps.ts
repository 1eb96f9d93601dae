import type { BackupDiskWriter } from '../../contracts/backup-sink.js';
import type { DiskReader } from '../../contracts/disk.js';
import type { CacheReader, CacheWriter } from '../../contracts/replication-cache.js';
import type { DiskChannel } from '../../contracts/transport.js';
import type { TokenBucket } from '../../util/token-bucket.js';
import type { BlockHasher } from '../block-hasher.js';
import type { DiskTransferOptions } from '../disk-transfer.js';
import type { DiskRecord } from '../run-record.js';
import { BackupTap } from './backup-tap.js';
import { BlockSender } from './block-sender.js';
import { DeltaStep } from './delta-step.js';
import { DigestRecorder } from './digest-recorder.js';
import { type DigestSource, ReplicaDigests } from './replica-digests.js';

/** What one disk's transfer is made of, with every optional fast path as the parts offer it. */
export interface DiskParts {
  disk: DiskRecord;
  reader: DiskReader;
  channel: DiskChannel;
  /** The trusted replication cache the plan compares with (`digestSource: 'cache'`). */
  cacheReader?: CacheReader;
  /** The new replication cache the run writes. */
  cacheWriter?: CacheWriter;
  /** The single-pass backup version's disk, and whether the version has a base. */
  backup?: { disk: BackupDiskWriter; hasBase: boolean };
  /** The delta base: open (tracked blocks, prefetched with each segment) or opened on first need. */
  deltaBase?: DiskReader | (() => Promise<DiskReader | undefined>);
  /** Read buffers, and as many for the delta base's bytes (tracked blocks). */
  buffers: Uint8Array[];
  baseBuffers?: Uint8Array[];
  readBytes: number;
  readAhead: number;
  blockSize: number;
  hasher: BlockHasher;
  digestOnWire: boolean;
  throttle?: TokenBucket;
  signal: AbortSignal;
}

/** The transfer's steps for {@link transferDisk}, with the options the loop needs besides. */
export type TransferSteps = Omit<
  DiskTransferOptions,
  'record' | 'ranges' | 'examineAll' | 'checkpointEveryMs' | 'beforeCheckpoint' | 'onCheckpoint' | 'onProgress'
>;

/**
 * Builds one disk's transfer steps from its parts, deciding once, here, which optional fast
 * path each part offers (a cache read at random or copied in bulk, a writer that carries entries,
 * a channel that takes deltas or releases buffers, a reader the hasher reads on its threads), so
 * that the transfer loop tests none of them.
 */
export function transferSteps(parts: DiskParts): TransferSteps {
  const { disk, reader, channel, cacheWriter, hasher, signal } = parts;
  const recorder = cacheWriter ? new DigestRecorder(cacheWriter, hasher.digestLength) : undefined;
  const source = digestSource(parts);
  const compare = source
    ? new ReplicaDigests(source, {
        from: disk.checkpointBlock,
        size: disk.size,
        blockSize: parts.blockSize,
        digestLength: hasher.digestLength,
        carry: disk.mode === 'tracked',
        // Digests the target reads from its replica are replica reads; a cache's are not.
        countReads: disk.digestSource === 'cache' ? () => undefined : (bytes) => (disk.stats.bytesReadReplica += bytes),
        recorder,
      })
    : undefined;
  const deltaBase = channel.sendDelta ? parts.deltaBase : undefined;
  const prefetchBase = deltaBase && typeof deltaBase !== 'function' ? deltaBase : undefined;
  const reuse = channel.releasesDataOnSend === true;
  const needDigests = compare !== undefined || parts.digestOnWire || recorder !== undefined;
  const pairedBase = new Map<ArrayBufferLike, Uint8Array>();
  if (reuse && parts.baseBuffers && prefetchBase?.readInto) {
    parts.buffers.forEach((buffer, i) => {
      const base = parts.baseBuffers![i];
      if (base && base.length >= buffer.length) pairedBase.set(buffer.buffer, base);
    });
  }
  return {
    reader,
    ...(compare ? { compare } : {}),
    ...(deltaBase ? { delta: new DeltaStep(deltaBase, hasher, parts.blockSize, disk.stats, signal) } : {}),
    ...(recorder ? { recorder } : {}),
    ...(parts.backup ? { backup: backupTap(parts.backup.disk, parts.backup.hasBase) } : {}),
    sender: new BlockSender(channel, disk.stats, {
      digestOnWire: parts.digestOnWire,
      ...(parts.throttle ? { throttle: parts.throttle } : {}),
      signal,
    }),
    digestOnWire: parts.digestOnWire,
    reading: {
      readAhead: parts.readAhead,
      readBytes: parts.readBytes,
      ...(reuse ? { buffers: parts.buffers } : {}),
      // The hasher reads the source's files itself, on its threads, when both sides allow it and
      // every block is hashed anyway: then reading runs on every core, not only on this thread.
      readOnHashers:
        reuse &&
        needDigests &&
        !prefetchBase &&
        reader.fileSpans !== undefined &&
        hasher.readAndHashOrZero !== undefined,
      ...(prefetchBase ? { prefetchBase } : {}),
      ...(pairedBase.size > 0 ? { pairedBase } : {}),
    },
    blockSize: parts.blockSize,
    hasher,
    signal,
  };
}

function backupTap(disk: BackupDiskWriter, hasBase: boolean): BackupTap {
  return new BackupTap((index, data) => disk.put(index, data), hasBase);
}

/** Where the compare step reads the replica's digests, or undefined when the disk is not compared. */
function digestSource(parts: DiskParts): DigestSource | undefined {
  const { disk, cacheReader: cache, cacheWriter: writer, channel, signal } = parts;
  const trackedWithCache = disk.mode === 'tracked' && cache !== undefined;
  if (!trackedWithCache && disk.mode !== 'hash-diff') return undefined;
  // Tracked blocks with a cache that reads at random and a writer that copies in bulk: the cache
  // is not walked block by block, only the tracked blocks' entries are looked up.
  if (trackedWithCache && cache.digestAt && writer?.carry) {
    const digestAt = cache.digestAt.bind(cache);
    const carry = writer.carry.bind(writer);
    return {
      kind: 'random',
      digestAt: (index) => digestAt(index, { signal }),
      carry: async (from, to) => {
        if (await carry(cache, from, to)) return;
        // This writer cannot copy from this reader: entry by entry.
        for (let index = from; index < to; index++) await writer.append(index, await digestAt(index, { signal }));
      },
    };
  }
  // A scan compares a segment's digests per call where the cache can copy them.
  if (!trackedWithCache && cache?.copyEntries) {
    const copyEntries = cache.copyEntries.bind(cache);
    return { kind: 'entries', copyEntries: (target, from, count) => copyEntries(target, from, count) };
  }
  const digests = cache
    ? cache.digests(disk.checkpointBlock, { signal })
    : channel.replicaDigests(disk.checkpointBlock, { signal });
  return { kind: 'stream', digests };
}
