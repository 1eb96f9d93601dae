import { InputError } from '@replikit/core';
import type { PullDiskResult } from '@replikit/transport';
import type { AbdLease, PluggedVdi } from './abd-manager.js';
import { replicaForVdi } from './abd-vdi-sink.js';

/** Options of {@link pullVdiThroughAbd}. */
export interface AbdPullOptions {
  /**
   * Bytes per compared block (a power of two from 4 KiB to 16 MiB).
   * @default 2097152 (2 MiB)
   */
  blockSize?: number;
  /** The run (the target agent passes it to its driver's writer). */
  runId?: string;
  /** The job's `options.replicationCache`: a pull cannot use it, so `true` gets a warning. */
  replicationCache?: boolean;
  /** Receives warnings (`cache-ignored-for-pull`). */
  onWarning?: (message: string) => void;
  /** Cancels the pull. */
  signal?: AbortSignal;
}

/**
 * ABD pull: the target appliance connects to the source appliance and brings the replica VDI
 * plugged RW into it up to date from the snapshot VDI plugged RO into the source one. Both agents
 * compute block digests next to their data; only differing blocks cross, from the source
 * appliance straight to the target appliance (the engine's host carries none). The source
 * appliance's address and key go to the target agent over its authenticated control link.
 *
 * No replication cache is used: the target's digests come from the replica itself, every run.
 * With `replicationCache: true` the warning `cache-ignored-for-pull` says so.
 *
 * @throws `E_INPUT` when the VDIs are plugged in the wrong modes or differ in size.
 */
export async function pullVdiThroughAbd(
  target: AbdLease,
  replicaVdi: PluggedVdi,
  source: AbdLease,
  snapshotVdi: PluggedVdi,
  options: AbdPullOptions = {},
): Promise<PullDiskResult> {
  if (replicaVdi.mode !== 'RW') throw new InputError(`replica VDI ${replicaVdi.uuid} must be plugged RW to be written`);
  if (snapshotVdi.mode !== 'RO') throw new InputError(`snapshot VDI ${snapshotVdi.uuid} must be plugged RO to be read`);
  if (options.replicationCache === true) {
    options.onWarning?.(
      'cache-ignored-for-pull: options.replicationCache is true, but a pull compares digests of the replica itself; the cache is neither read nor written',
    );
  }
  return pullIntoVdi(
    target,
    replicaVdi,
    {
      address: source.appliance.address,
      credential: source.appliance.psk,
      vmId: source.appliance.uuid,
      diskId: snapshotVdi.uuid,
    },
    options,
  );
}

/** Where a pull reads from: an agent that serves the snapshot disk, and its key. */
export interface AbdPullFrom {
  /** The serving agent's address (the source appliance's). */
  readonly address: { readonly host: string; readonly port: number };
  /** Its TLS-PSK identity and key. */
  readonly credential: { readonly identity: string; readonly key: Uint8Array };
  /** The VM id the serving agent lists the disk under (the source appliance's uuid). */
  readonly vmId: string;
  /** The disk id it lists the disk under (the snapshot VDI's uuid). */
  readonly diskId: string;
}

/**
 * The target half of an ABD pull: the agent of `target` brings `replicaVdi` (plugged RW into it)
 * up to date from the disk `from` serves, copying only the blocks whose digests differ.
 *
 * @throws `E_INPUT` when the replica VDI is plugged read-only.
 */
export async function pullIntoVdi(
  target: AbdLease,
  replicaVdi: PluggedVdi,
  from: AbdPullFrom,
  options: Pick<AbdPullOptions, 'blockSize' | 'runId' | 'signal'> & {
    /** Cap on the bytes per second the target's agent reads from the source. */
    bandwidthLimit?: number;
  } = {},
): Promise<PullDiskResult> {
  if (replicaVdi.mode !== 'RW') throw new InputError(`replica VDI ${replicaVdi.uuid} must be plugged RW to be written`);
  const { replica } = await replicaForVdi(target, replicaVdi, options.signal);
  return target.target().pullDisk(
    {
      from: { ...from.address, identity: from.credential.identity, key: from.credential.key },
      vmId: from.vmId,
      diskId: from.diskId,
      replica,
      disk: 0,
      blockSize: options.blockSize ?? 2 * 1024 * 1024,
      algorithm: 'sha256',
      ...(options.runId ? { runId: options.runId } : {}),
      ...(options.bandwidthLimit !== undefined ? { bandwidthLimit: options.bandwidthLimit } : {}),
    },
    { signal: options.signal },
  );
}
