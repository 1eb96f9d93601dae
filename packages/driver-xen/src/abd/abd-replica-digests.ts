import {
  type BlockDigest,
  InputError,
  type ReplicaDigestsFrom,
  throwIfAborted,
  UnsupportedError,
} from '@replikit/core';
import {
  FEATURE_READ_DIGESTS_HASHER,
  MAX_DIGEST_SPAN,
  MAX_DIGESTS_PER_FRAME,
  READ_DIGEST_ALGORITHMS,
} from '@replikit/transport';
import type { AbdLease } from './abd-manager.js';

/** True when every appliance's agent computes digests with `algorithm` (node:crypto's names). */
export function agentDigests(algorithm: string): boolean {
  return READ_DIGEST_ALGORITHMS.has(algorithm);
}

/**
 * Resolves when the appliance's agent computes `algorithm`: node:crypto's always, others (the
 * engine's default `xxh128`) when it lists `read-digests-hasher`.
 *
 * @throws `E_UNSUPPORTED` otherwise (the engine then reads the replica itself).
 */
async function checkAgentDigests(lease: AbdLease, algorithm: string, signal?: AbortSignal): Promise<void> {
  if (agentDigests(algorithm)) return;
  if (await lease.target().supports(FEATURE_READ_DIGESTS_HASHER, { signal })) return;
  throw new UnsupportedError(
    `appliance '${lease.appliance.name}' cannot digest with '${algorithm}' (its replikit-agent lacks '${FEATURE_READ_DIGESTS_HASHER}')`,
    { details: { capability: FEATURE_READ_DIGESTS_HASHER } },
  );
}

/**
 * Digests of VDI `vdiRef` (`size` bytes) computed by the appliance's agent, next to the data: the
 * VDI is plugged read-only into the appliance of `lease`, its blocks from `from.fromBlock` on are
 * digested by `readDigests` requests of at most 4,096 blocks and 256 MiB each, one request ahead
 * of the caller (`null` for an all-zero block), and it is unplugged when the walk ends, stops
 * early, fails or is aborted. Nothing of the VDI crosses to the caller but the digests.
 *
 * @throws `E_UNSUPPORTED` (before anything is plugged) when the agent cannot compute
 * `from.algorithm`; `E_INPUT` when the agent does not see the plugged VDI (abd.srs does not name its SR).
 */
export async function* digestVdiThroughAbd(
  lease: AbdLease,
  vdiRef: string,
  size: number,
  from: ReplicaDigestsFrom,
  signal?: AbortSignal,
): AsyncIterable<BlockDigest> {
  const { fromBlock, blockSize, algorithm } = from;
  await checkAgentDigests(lease, algorithm, signal);
  const plugged = await lease.plug(vdiRef, 'RO', signal);
  let pending: Promise<Array<Uint8Array | null>> | undefined;
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
    const request = (first: number): Promise<Array<Uint8Array | null>> | undefined => {
      if (first >= blocks) return undefined;
      const offset = first * blockSize;
      const length = Math.min(perRequest * blockSize, size - offset);
      const asked = agent.readDigests(
        lease.appliance.uuid,
        plugged.uuid,
        { offset, length, blockSize, algorithm },
        {
          signal,
        },
      );
      asked.catch(() => undefined); // awaited below, or settled in finally when the walk stops early
      return asked;
    };
    // One request ahead: the agent digests the next span while the caller compares this one.
    let first = fromBlock;
    pending = request(first);
    while (pending) {
      const digests = await pending;
      const expected = Math.min(perRequest, blocks - first);
      if (digests.length !== expected) {
        throw new InputError(
          `appliance '${lease.appliance.name}' sent ${digests.length} digests of VDI ${plugged.uuid} for ${expected} blocks`,
        );
      }
      const at = first;
      first += expected;
      pending = request(first);
      for (const [i, digest] of digests.entries()) {
        throwIfAborted(signal);
        yield { index: at + i, digest };
      }
    }
  } finally {
    await pending?.catch(() => undefined); // the agent is done with the VDI before it goes
    await lease.unplug(plugged);
  }
}
