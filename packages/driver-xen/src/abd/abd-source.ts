import type { DiskReader, Extent, OperationOptions } from '@replikit/core';
import { vhdAllocation } from '../vhd-allocation.js';
import type { XenConnection } from '../xapi/xen-connection.js';
import { openAbdDiskReader } from './abd-disk-reader.js';
import { AbdLease, type PluggedVdi } from './abd-manager.js';
import type { AbdSettings, AbdTiming } from './abd-settings.js';

/**
 * The source side of the `abd` method for one Xen driver: the pool's appliance is acquired on the
 * first read, each snapshot VDI read is plugged into it read-only for as long as its reader is
 * open, and {@link AbdSourceReads.close} (the driver's close) unplugs what is left and releases
 * the appliance (stopping it unless the job keeps it).
 */
export class AbdSourceReads {
  private lease: Promise<AbdLease> | undefined;

  constructor(
    private readonly connection: XenConnection,
    private readonly settings: AbdSettings,
    private readonly timing: AbdTiming = {},
  ) {}

  /** A reader of snapshot VDI `vdiRef` through the appliance; closing it unplugs the VDI. */
  async open(vdiRef: string, options?: OperationOptions): Promise<DiskReader> {
    const signal = options?.signal;
    if (!this.lease) {
      const acquiring = AbdLease.acquire(this.connection, this.settings, {
        ...this.timing,
        ...(signal ? { signal } : {}),
      });
      this.lease = acquiring;
      acquiring.catch(() => {
        if (this.lease === acquiring) this.lease = undefined;
      });
    }
    const lease = await this.lease;
    const plugged = await lease.plug(vdiRef, 'RO', signal);
    try {
      const inner = await openAbdDiskReader(lease, plugged, { ...(signal ? { signal } : {}) });
      // Which blocks hold data: the VHD block table XAPI exports (the agent reads bytes only).
      const allocation = (s?: AbortSignal) => vhdAllocation(this.connection, vdiRef, inner.size, s);
      return new UnpluggingReader(inner, lease, plugged, allocation);
    } catch (error) {
      await lease.unplug(plugged).catch(() => undefined);
      throw error;
    }
  }

  /** Unplugs every VDI still plugged and releases the appliance. Calling it twice is harmless. */
  async close(): Promise<void> {
    const lease = this.lease;
    this.lease = undefined;
    const held = await lease?.catch(() => undefined);
    await held?.release();
  }
}

/** A reader that unplugs its VDI from the appliance when it is closed. */
class UnpluggingReader implements DiskReader {
  private closed = false;

  constructor(
    private readonly inner: DiskReader,
    private readonly lease: AbdLease,
    private readonly plugged: PluggedVdi,
    private readonly allocation: (signal?: AbortSignal) => Promise<Extent[] | undefined>,
  ) {}

  get size(): number {
    return this.inner.size;
  }
  get blockSize(): number {
    return this.inner.blockSize;
  }
  async *allocated(options?: OperationOptions): AsyncIterable<Extent> {
    const extents = await this.allocation(options?.signal);
    if (extents === undefined) yield* this.inner.allocated(options);
    else yield* extents;
  }
  read(offset: number, length: number, options?: OperationOptions): Promise<Uint8Array> {
    return this.inner.read(offset, length, options);
  }
  readInto(offset: number, target: Uint8Array, options?: OperationOptions): Promise<void> {
    return this.inner.readInto!(offset, target, options);
  }
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.inner.close();
    } finally {
      await this.lease.unplug(this.plugged);
    }
  }
}
