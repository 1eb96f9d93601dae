import { randomUUID } from 'node:crypto';
import {
  type BlockChannel,
  type DiskChannel,
  type DiskReader,
  type DiskRef,
  InputError,
  type Replica,
  StateError,
} from '@replikit/core';
import type { VdiSink } from '../vdi-sink.js';
import type { AbdLease, PluggedVdi } from './abd-manager.js';
import { replicaForVdi } from './abd-vdi-sink.js';

/** {@link openAbdTargetSink}'s block size on the wire: the engine's default block. */
export const ABD_TARGET_SINK_BLOCK = 64 * 1024;

/** What an ABD target sink sent to the appliance (bytes that land in the VDI). */
export interface AbdWriteStats {
  /** Bytes of data blocks sent (whole blocks, including those completed by a read-modify-write). */
  dataBytes: number;
  /** Blocks sent as data. */
  dataBlocks: number;
  /** Blocks sent as zero runs (no payload). */
  zeroBlocks: number;
  /** Blocks completed by reading the rest from the VDI first (a write not aligned to the block). */
  readModifyWrites: number;
}

/** A fresh {@link AbdWriteStats}. */
export function emptyAbdWriteStats(): AbdWriteStats {
  return { dataBytes: 0, dataBlocks: 0, zeroBlocks: 0, readModifyWrites: 0 };
}

/**
 * Opens a {@link VdiSink} over a VDI plugged read-write into the target appliance that takes the
 * engine's writes in any order and at any offset (what a replica writer passes). Bytes go in
 * 64 KiB blocks through the agent's block session. A block written in part is completed by a
 * read-modify-write: the rest is read back through the same appliance (the agent's `readDisk` of
 * the plugged VDI, after a checkpoint makes earlier sends durable), so no 2 MiB block is rewritten
 * for a 64 KiB change. The session only takes ascending blocks: a write below the last block sent
 * ends the stream durably and opens a new one. `stats` adds up what was sent.
 *
 * @throws `E_INPUT` when the VDI is plugged read-only; the agent's `E_NOT_FOUND` when it is not
 * plugged into that appliance.
 */
export async function openAbdTargetSink(
  lease: AbdLease,
  plugged: PluggedVdi,
  options: { runId?: string; signal?: AbortSignal; stats?: AbdWriteStats } = {},
): Promise<VdiSink> {
  if (plugged.mode !== 'RW') {
    throw new InputError(`VDI ${plugged.uuid} is plugged read-only into the appliance: plug it RW to write it`);
  }
  const { replica, disk } = await replicaForVdi(lease, plugged, options.signal);
  const sink = new AbdTargetSink(lease, replica, disk, options.runId ?? randomUUID(), options.stats);
  await sink.open(options.signal);
  return sink;
}

/** A block read back and changed in part, not sent yet (the next write may continue it). */
interface Held {
  index: number;
  data: Uint8Array;
}

/** The sink of {@link openAbdTargetSink}. */
class AbdTargetSink implements VdiSink {
  private channel: BlockChannel | undefined;
  private stream: DiskChannel | undefined;
  /** The lowest block the current stream may still take. */
  private end = 0;
  /** True when sends happened since the stream's last checkpoint. */
  private dirty = false;
  private held: Held | undefined;
  private reader: DiskReader | undefined;
  /** Serialises the calls: the session takes one sender, in order. */
  private queue: Promise<unknown> = Promise.resolve();
  private state: 'open' | 'closed' = 'open';
  private readonly size: number;
  private readonly block = ABD_TARGET_SINK_BLOCK;

  constructor(
    private readonly lease: AbdLease,
    private readonly replica: Replica,
    private readonly disk: DiskRef,
    private readonly runId: string,
    private readonly stats: AbdWriteStats = emptyAbdWriteStats(),
  ) {
    this.size = disk.size;
  }

  /** Opens the first stream (so a sink that opens has a working session). */
  async open(signal?: AbortSignal): Promise<void> {
    await this.startStream(signal);
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    this.checkRange(offset, data.length);
    return this.serial(() =>
      this.put(offset, data.length, (at, from, n, target) => target.set(data.subarray(from, from + n), at)),
    );
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    this.checkRange(offset, length);
    return this.serial(async () => {
      const first = Math.ceil(offset / this.block);
      const endBlock = offset + length === this.size ? this.blockCount() : Math.floor((offset + length) / this.block);
      if (endBlock <= first) {
        await this.put(offset, length, (at, _from, n, target) => target.fill(0, at, at + n));
        return;
      }
      // Partial head and tail through read-modify-write, whole blocks as one zero run.
      const head = first * this.block - offset;
      if (head > 0) await this.put(offset, head, (at, _from, n, target) => target.fill(0, at, at + n));
      await this.sendOp(first, { kind: 'zero', index: first, count: endBlock - first });
      this.stats.zeroBlocks += endBlock - first;
      const tailFrom = endBlock * this.block;
      const tail = offset + length - tailFrom;
      if (tail > 0) await this.put(tailFrom, tail, (at, _from, n, target) => target.fill(0, at, at + n));
    });
  }

  async flush(): Promise<void> {
    this.checkOpen();
    return this.serial(async () => {
      await this.sendHeld();
      await this.checkpoint();
    });
  }

  async close(): Promise<void> {
    if (this.state === 'closed') return;
    try {
      await this.flush();
      await this.serial(async () => {
        await this.stream?.close();
      });
    } finally {
      this.state = 'closed';
      await this.release();
    }
  }

  async abort(): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.held = undefined;
    await this.release();
  }

  /**
   * Writes `[offset, offset + length)`: each block it covers whole is sent at once, a block it
   * covers in part is read back (or continued while held) and changed by `fill`.
   */
  private async put(
    offset: number,
    length: number,
    fill: (at: number, from: number, n: number, target: Uint8Array) => void,
  ): Promise<void> {
    let position = offset;
    while (position < offset + length) {
      const index = Math.floor(position / this.block);
      const start = index * this.block;
      const blockLength = Math.min(this.block, this.size - start);
      const at = position - start;
      const n = Math.min(offset + length - position, blockLength - at);
      const from = position - offset;
      if (this.held?.index === index) {
        fill(at, from, n, this.held.data);
      } else if (at === 0 && n === blockLength) {
        await this.sendHeld();
        const data = new Uint8Array(blockLength);
        fill(0, from, n, data);
        await this.sendData(index, data);
      } else {
        await this.sendHeld();
        const data = await this.readBlock(start, blockLength);
        this.stats.readModifyWrites++;
        fill(at, from, n, data);
        this.held = { index, data };
      }
      position += n;
    }
  }

  private async sendHeld(): Promise<void> {
    const held = this.held;
    if (!held) return;
    this.held = undefined;
    await this.sendData(held.index, held.data);
  }

  private async sendData(index: number, data: Uint8Array): Promise<void> {
    await this.sendOp(index, { kind: 'data', index, data });
    this.stats.dataBytes += data.length;
    this.stats.dataBlocks++;
  }

  /** Sends on the current stream, or on a new one when `index` lies below what it has taken. */
  private async sendOp(
    index: number,
    op: { kind: 'data'; index: number; data: Uint8Array } | { kind: 'zero'; index: number; count: number },
  ): Promise<void> {
    if (!this.stream || index < this.end) await this.restartStream();
    await this.stream!.send(op);
    this.end = op.kind === 'zero' ? index + op.count : index + 1;
    this.dirty = true;
  }

  /** The current bytes of a block, through the appliance, after earlier sends are durable. */
  private async readBlock(start: number, length: number): Promise<Uint8Array> {
    await this.checkpoint();
    this.reader ??= this.lease.target().openSourceReader(this.lease.appliance.uuid, this.disk, this.block);
    const bytes = await this.reader.read(start, length);
    return new Uint8Array(bytes);
  }

  private async checkpoint(): Promise<void> {
    if (!this.stream || !this.dirty) return;
    await this.stream.checkpoint();
    this.dirty = false;
  }

  private async restartStream(): Promise<void> {
    if (this.stream) {
      await this.checkpoint();
      await this.stream.close();
      await this.channel?.close();
      this.stream = undefined;
      this.channel = undefined;
    }
    await this.startStream();
  }

  private async startStream(signal?: AbortSignal): Promise<void> {
    const channel = await this.lease
      .target()
      .transport.open(
        { runId: this.runId, replica: this.replica, blockSize: this.block, digest: 'sha256' },
        signal ? { signal } : {},
      );
    try {
      this.stream = await channel.openDisk(this.replica.disks[0]!, signal ? { signal } : {});
    } catch (error) {
      await channel.close().catch(() => undefined);
      throw error;
    }
    this.channel = channel;
    this.end = 0;
    this.dirty = false;
  }

  private async release(): Promise<void> {
    const channel = this.channel;
    this.channel = undefined;
    this.stream = undefined;
    await this.reader?.close().catch(() => undefined);
    this.reader = undefined;
    await channel?.close().catch(() => undefined);
  }

  private serial<T>(task: () => Promise<T>): Promise<T> {
    const run = this.queue.then(() => {
      this.checkOpen();
      return task();
    });
    this.queue = run.catch(() => undefined);
    return run;
  }

  private blockCount(): number {
    return Math.ceil(this.size / this.block);
  }

  private checkOpen(): void {
    if (this.state === 'closed') throw new StateError(`the sink of VDI ${this.disk.id} is closed`);
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
      throw new InputError(`range ${offset} (+${length}) lies outside VDI ${this.disk.id} (${this.size} bytes)`);
    }
  }
}
