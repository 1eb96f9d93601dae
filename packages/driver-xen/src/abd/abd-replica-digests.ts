import { type BlockDigest, InputError, type ReplicaDigestsFrom, throwIfAborted } from '@replikit/core';
import { MAX_DIGEST_SPAN, MAX_DIGESTS_PER_FRAME, READ_DIGEST_ALGORITHMS } from '@replikit/transport';
import type { AbdLease } from './abd-manager.js';

/** True when the appliance's agent computes digests with `algorithm` (node:crypto's names). */
export function agentDigests(algorithm: string): boolean {
  return READ_DIGEST_ALGORITHMS.has(algorithm);
}

/**
 * Digests of VDI `vdiRef` (`size` bytes) computed by the appliance's agent, next to the data: the
 * VDI is plugged read-only into the appliance of `lease`, its blocks from `from.fromBlock` on are
 * digested by `readDigests` requests of at most 4,096 blocks and 256 MiB each (`null` for an
 * all-zero block), and it is unplugged when the walk ends, stops early, fails or is aborted.
 * Nothing of the VDI crosses to the caller but the digests.
 *
 * @throws `E_INPUT` when the agent does not see the plugged VDI (abd.srs does not name its SR).
 */
export async function* digestVdiThroughAbd(
  lease: AbdLease,
  vdiRef: string,
  size: number,
  from: ReplicaDigestsFrom,
  signal?: AbortSignal,
): AsyncIterable<BlockDigest> {
  const { fromBlock, blockSize, algorithm } = from;
  const plugged = await lease.plug(vdiRef, 'RO', signal);
  try {
    const agent = lease.target();
    const vm = await agent.getVM(lease.appliance.uuid, { signal });
    if (!vm.disks.some((d) => d.id === plugged.uuid)) {
      throw new InputError(
        `VDI ${plugged.uuid} is not among the disks appliance '${lease.appliance.name}' sees: check abd.srs names its SR`,
      );
    }
    const perRequest = Math.max(1, Math.min(MAX_DIGESTS_PER_FRAME, Math.floor(MAX_DIGEST_SPAN / blockSize)));
    const blocks = Math.ceil(size / blockSize);
    for (let first = fromBlock; first < blocks; first += perRequest) {
      const offset = first * blockSize;
      const length = Math.min(perRequest * blockSize, size - offset);
      const digests = await agent.readDigests(
        lease.appliance.uuid,
        plugged.uuid,
        { offset, length, blockSize, algorithm },
        { signal },
      );
      const expected = Math.ceil(length / blockSize);
      if (digests.length !== expected) {
        throw new InputError(
          `appliance '${lease.appliance.name}' sent ${digests.length} digests of VDI ${plugged.uuid} for ${expected} blocks`,
        );
      }
      for (const [i, digest] of digests.entries()) {
        throwIfAborted(signal);
        yield { index: first + i, digest };
      }
    }
  } finally {
    await lease.unplug(plugged);
  }
}
