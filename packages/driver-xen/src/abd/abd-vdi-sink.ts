import { randomUUID } from 'node:crypto';
import {
  type BlockChannel,
  type DiskChannel,
  type DiskRef,
  DriverError,
  InputError,
  type OperationOptions,
  type Replica,
  StateError,
} from '@replikit/core';
import type { VdiSink } from '../vdi-sink.js';
import type { AbdLease, PluggedVdi } from './abd-manager.js';

/** Options of {@link openAbdVdiSink}. */
export interface AbdVdiSinkOptions {
  /**
   * Bytes per block on the wire (a power of two from 4 KiB to 16 MiB). Writes start on a block
   * boundary unless they continue the previous one; a block is sent once it is whole.
   * @default 2097152 (2 MiB)
   */
  blockSize?: number;
  /** Digest the agent checks each block with. @default "sha256" */
  digest?: string;
  /** The run the session belongs to (the agent logs it). @default a random id */
  runId?: string;
  /** Cancels opening the session. */
  signal?: AbortSignal;
}

/** {@link AbdVdiSinkOptions.blockSize}'s default: XAPI's VHD block size. */
export const DEFAULT_ABD_SINK_BLOCK = 2 * 1024 * 1024;

/**
 * Opens a {@link VdiSink} that writes a replica VDI plugged read-write into the target appliance,
 * through its agent's block sessions (the transport's `target` feature, driver `xen-abd`, disk id
 * the VDI's uuid). The bytes go from this process to the appliance over TLS-PSK; XAPI carries none.
 *
 * @throws `E_INPUT` when the VDI is plugged read-only; the agent's `E_NOT_FOUND` when it is not
 * plugged into that appliance.
 */
export async function openAbdVdiSink(
  lease: AbdLease,
  plugged: PluggedVdi,
  options: AbdVdiSinkOptions = {},
): Promise<VdiSink> {
  if (plugged.mode !== 'RW') {
    throw new InputError(`VDI ${plugged.uuid} is plugged read-only into the appliance: plug it RW to write it`);
  }
  const blockSize = options.blockSize ?? DEFAULT_ABD_SINK_BLOCK;
  if (
    !Number.isSafeInteger(blockSize) ||
    blockSize < 4096 ||
    blockSize > 16 * 1024 * 1024 ||
    (blockSize & (blockSize - 1)) !== 0
  ) {
    throw new InputError(`blockSize must be a power of two from 4096 to 16777216, got ${blockSize}`);
  }
  const target = lease.target();
  const signal = options.signal;
  const { replica } = await replicaForVdi(lease, plugged, signal);
  const channel = await target.transport.open(
    { runId: options.runId ?? randomUUID(), replica, blockSize, digest: options.digest ?? 'sha256' },
    { signal },
  );
  try {
    const disk = replica.disks[0]!;
    return new AbdVdiSink(channel, await channel.openDisk(disk, { signal }), disk.size, blockSize);
  } catch (error) {
    await channel.close().catch(() => undefined);
    throw error;
  }
}

/**
 * The one-disk "replica" the target appliance's agent writes for a VDI plugged into it: its
 * `ensureReplica` with `placement.vdis` naming the VDI (the XenServer driver keeps the real
 * replica VM; the agent only moves bytes). Also gives the disk as the agent lists it.
 */
export async function replicaForVdi(
  lease: AbdLease,
  plugged: PluggedVdi,
  signal?: AbortSignal,
): Promise<{ replica: Replica; disk: DiskRef }> {
  const target = lease.target();
  const vm = await target.getVM(lease.appliance.uuid, { signal });
  const disk = vm.disks.find((d) => d.id === plugged.uuid);
  if (disk === undefined) {
    throw new DriverError(
      `VDI ${plugged.uuid} is not plugged into appliance '${lease.appliance.name}' as its agent sees it; plug it again`,
    );
  }
  const replica = await target.ensureReplica(
    {
      name: `vdi ${plugged.uuid}`,
      source: vm,
      disks: [{ sourceDiskId: plugged.uuid, size: disk.size }],
      placement: { vdis: [plugged.uuid] },
    },
    { signal },
  );
  return { replica, disk };
}

/** The block currently being filled. */
interface Pending {
  index: number;
  data: Uint8Array;
  filled: number;
}

/** A {@link VdiSink} over one disk stream of an agent's block session (see {@link openAbdVdiSink}). */
class AbdVdiSink implements VdiSink {
  private pending: Pending | undefined;
  /** The next block index a write may start (blocks go in ascending order). */
  private nextIndex = 0;
  private state: 'open' | 'closed' = 'open';

  constructor(
    private readonly channel: BlockChannel,
    private readonly disk: DiskChannel,
    readonly size: number,
    private readonly blockSize: number,
  ) {}

  async write(offset: number, data: Uint8Array, options?: OperationOptions): Promise<void> {
    this.checkRange(offset, data.length);
    let position = offset;
    let from = 0;
    while (from < data.length) {
      const index = Math.floor(position / this.blockSize);
      const at = position - index * this.blockSize;
      if (this.pending === undefined) {
        if (at !== 0 || index < this.nextIndex) throw this.orderError(offset);
        this.pending = { index, data: new Uint8Array(this.blockLength(index)), filled: 0 };
      }
      const block = this.pending;
      if (block.index !== index || block.filled !== at) throw this.orderError(offset);
      const n = Math.min(data.length - from, block.data.length - at);
      block.data.set(data.subarray(from, from + n), at);
      block.filled += n;
      position += n;
      from += n;
      if (block.filled === block.data.length) {
        this.pending = undefined;
        this.nextIndex = index + 1;
        await this.disk.send({ kind: 'data', index, data: block.data }, options);
      }
    }
  }

  async writeZeroes(offset: number, length: number, options?: OperationOptions): Promise<void> {
    this.checkRange(offset, length);
    if (length === 0) return;
    const first = offset / this.blockSize;
    const end = offset + length;
    if (
      this.pending !== undefined ||
      !Number.isInteger(first) ||
      first < this.nextIndex ||
      (end !== this.size && end % this.blockSize !== 0)
    ) {
      throw new InputError(
        `zeroes at ${offset} (+${length}) on VDI ${this.disk.disk.id} must cover whole ${this.blockSize}-byte blocks after the last write`,
      );
    }
    const count = Math.ceil(end / this.blockSize) - first;
    this.nextIndex = first + count;
    await this.disk.send({ kind: 'zero', index: first, count }, options);
  }

  async flush(options?: OperationOptions): Promise<void> {
    this.checkOpen();
    if (this.pending !== undefined) {
      throw new InputError(
        `block ${this.pending.index} of VDI ${this.disk.disk.id} is written in part (${this.pending.filled} of ${this.pending.data.length} bytes): write the rest before a flush`,
      );
    }
    await this.disk.checkpoint(options);
  }

  async close(): Promise<void> {
    if (this.state === 'closed') return;
    try {
      await this.flush();
      await this.disk.close();
    } finally {
      this.state = 'closed';
      await this.channel.close();
    }
  }

  async abort(): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.pending = undefined;
    await this.channel.close().catch(() => undefined);
  }

  private blockLength(index: number): number {
    return Math.min(this.blockSize, this.size - index * this.blockSize);
  }

  private checkOpen(): void {
    if (this.state === 'closed') throw new StateError(`the sink of VDI ${this.disk.disk.id} is closed`);
  }

  private checkRange(offset: number, length: number): void {
    this.checkOpen();
    if (
      !Number.isSafeInteger(offset) ||
      !Number.isSafeInteger(length) ||
      offset < 0 ||
      length < 0 ||
      offset + length > this.size
    ) {
      throw new InputError(`range ${offset} (+${length}) lies outside VDI ${this.disk.disk.id} (${this.size} bytes)`);
    }
  }

  private orderError(offset: number): InputError {
    return new InputError(
      `a write at ${offset} on VDI ${this.disk.disk.id} must start a ${this.blockSize}-byte block after the last one written, or continue the block in progress`,
    );
  }
}
