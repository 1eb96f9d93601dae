import { createHash } from 'node:crypto';
import type { DiskReader, DiskWriter, Hypervisor, OperationOptions } from '@replikit/core';
import { InputError } from '@replikit/core';
import { TokenBucket } from '@replikit/core/internal';
import { MAX_BLOCK_SIZE, MAX_DIGESTS_PER_FRAME } from './protocol/constants.js';
import { ProtocolError } from './protocol/protocol-error.js';
import type { RemoteTargetDriver } from './remote-target.js';
import { integerOf, objectOf, replicaOf, stringOf } from './target-control-shapes.js';

/** What a `pullDisk` reports. */
export interface PullDiskResult {
  /** Blocks compared (digest of the source block against the replica's). */
  blocks: number;
  /** Blocks that differed and were copied (or zeroed) into the replica. */
  copied: number;
  /** Bytes read from the source agent. */
  bytesRead: number;
}

/** Makes the client that reaches the source agent (the agent passes its own `createRemoteTarget`). */
export type SourceDialer = (
  address: { host: string; port: number },
  psk: { identity: string; key: Uint8Array },
) => RemoteTargetDriver;

/** Digest algorithms a pull compares blocks with (node:crypto's names, as `readDigests` takes them). */
const ALGORITHMS = new Set(['sha256', 'sha512']);

function hexKey(value: unknown): Uint8Array {
  const hex = stringOf(value, 'from.key');
  if (!/^([0-9a-fA-F]{2}){16,64}$/.test(hex)) throw new ProtocolError('from.key must be 16 to 64 bytes of hex');
  return Buffer.from(hex, 'hex');
}

/**
 * The agent side of `pullDisk` (docs/protocol.md, section 13): this agent dials the source agent
 * the request names (TLS-PSK with the key it carries), compares the digests of the source disk's
 * blocks (`readDigests` there) with its own replica disk's, and copies only the blocks that
 * differ (`readDisk` there, its driver's writer here), then flushes. The replication cache plays
 * no part: the replica itself is read, every run. `bandwidthLimit` (bytes per second), when sent,
 * paces the block reads from the source.
 */
export async function runPullDisk(
  target: Hypervisor,
  args: Record<string, unknown>,
  options: OperationOptions,
  dialSource: SourceDialer,
): Promise<PullDiskResult> {
  const from = objectOf(args.from, 'from');
  const address = { host: stringOf(from.host, 'from.host'), port: integerOf(from.port, 'from.port', 1, 65535) };
  const psk = { identity: stringOf(from.identity, 'from.identity'), key: hexKey(from.key) };
  const vmId = stringOf(args.vmId, 'vmId');
  const diskId = stringOf(args.diskId, 'diskId');
  const replica = replicaOf(args.replica);
  const disk = replica.disks[integerOf(args.disk, 'disk', 0, Math.max(0, replica.disks.length - 1))];
  if (disk === undefined) throw new ProtocolError('replica.disks is empty');
  const blockSize = integerOf(args.blockSize, 'blockSize', 4096, MAX_BLOCK_SIZE);
  const algorithm = stringOf(args.algorithm, 'algorithm');
  if (!ALGORITHMS.has(algorithm)) throw new ProtocolError(`algorithm must be one of ${[...ALGORITHMS].join(', ')}`);
  const runId = args.runId === undefined ? undefined : stringOf(args.runId, 'runId');
  // Optional cap on the bytes read from the source, per second (the job's bandwidthLimit).
  const throttle =
    args.bandwidthLimit === undefined
      ? undefined
      : new TokenBucket(integerOf(args.bandwidthLimit, 'bandwidthLimit', 1, Number.MAX_SAFE_INTEGER));

  const source = dialSource(address, psk);
  let mine: DiskReader | undefined;
  let theirs: DiskReader | undefined;
  let writer: DiskWriter | undefined;
  try {
    const sourceDisk = (await source.getVM(vmId, options)).disks.find((d) => d.id === diskId);
    if (!sourceDisk) throw new InputError(`the source agent lists no disk ${diskId} of VM ${vmId}`);
    mine = await target.openReader(disk, options);
    // A replica disk may be larger than its source (an SR that rounds sizes up): the pull covers
    // the source's bytes only. A smaller one cannot hold them.
    if (mine.size < sourceDisk.size) {
      throw new InputError(
        `replica disk ${disk.id} holds ${mine.size} bytes, smaller than source disk ${diskId} (${sourceDisk.size} bytes): grow the replica disk first`,
      );
    }
    theirs = source.openSourceReader(vmId, sourceDisk, blockSize);
    writer = await target.openWriter(replica, disk, { ...options, ...(runId ? { runId } : {}) });
    const result: PullDiskResult = { blocks: 0, copied: 0, bytesRead: 0 };
    const size = sourceDisk.size;
    const perRequest = Math.min(MAX_DIGESTS_PER_FRAME, Math.floor((256 * 1024 * 1024) / blockSize));
    for (let offset = 0; offset < size; offset += perRequest * blockSize) {
      const length = Math.min(perRequest * blockSize, size - offset);
      const digests = await source.readDigests(vmId, diskId, { offset, length, blockSize, algorithm }, options);
      for (const [i, digest] of digests.entries()) {
        const at = offset + i * blockSize;
        const n = Math.min(blockSize, size - at);
        const current = await mine.read(at, n, options);
        const zero = current.every((b) => b === 0);
        const same =
          digest === null ? zero : !zero && Buffer.from(digest).equals(createHash(algorithm).update(current).digest());
        result.blocks++;
        if (same) continue;
        result.copied++;
        if (digest === null) {
          await writer.writeZeroes(at, n, options);
        } else {
          await throttle?.take(n, options.signal);
          await writer.write(at, await theirs.read(at, n, options), options);
          result.bytesRead += n;
        }
      }
    }
    await writer.flush(options);
    const done = writer;
    writer = undefined;
    await done.close();
    return result;
  } finally {
    await writer?.close().catch(() => undefined);
    await theirs?.close().catch(() => undefined);
    await mine?.close().catch(() => undefined);
    await source.close();
  }
}

/** Checks a `pullDisk` result on the engine's side. */
export function pullDiskResultOf(value: unknown): PullDiskResult {
  const body = objectOf(value, 'pullDisk result');
  return {
    blocks: integerOf(body.blocks, 'pullDisk result.blocks'),
    copied: integerOf(body.copied, 'pullDisk result.copied'),
    bytesRead: integerOf(body.bytesRead, 'pullDisk result.bytesRead'),
  };
}
