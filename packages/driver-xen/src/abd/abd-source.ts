import type { DiskReader, Extent, OperationOptions, PullSource } from '@replikit/core';
import { vhdAllocation } from '../vhd-allocation.js';
import type { XenConnection } from '../xapi/xen-connection.js';
import { openAbdDiskReader } from './abd-disk-reader.js';
import type { AbdLease, PluggedVdi } from './abd-manager.js';
import type { AbdSettings, AbdTiming } from './abd-settings.js';
import { SharedAbdLease } from './shared-lease.js';

/**
 * The source side of the `abd` method for one Xen driver: the pool's appliance is acquired on the
 * first read, each snapshot VDI read is plugged into it read-only for as long as its reader is
 * open, and {@link AbdSourceReads.close} (the driver's close) unplugs what is left and releases
 * the appliance (stopping it unless the job keeps it).
 */
export class AbdSourceReads {
  private readonly shared: SharedAbdLease;

  constructor(
    private readonly connection: XenConnection,
    settings: AbdSettings,
    timing: AbdTiming = {},
  ) {
    this.shared = new SharedAbdLease(connection, settings, timing);
  }

  /** A reader of snapshot VDI `vdiRef` through the appliance; closing it unplugs the VDI. */
  async open(vdiRef: string, options?: OperationOptions): Promise<DiskReader> {
    const signal = options?.signal;
    const lease = await this.shared.get(signal);
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

  /**
   * Offers snapshot VDI `vdiRef` to a target appliance's pull (job direction `pull`): plugs it
   * read-only into the pool's appliance and gives the appliance's agent address and key; closing
   * the offer unplugs the VDI (so does {@link AbdSourceReads.close}).
   */
  async offer(vdiRef: string, size: number, options?: OperationOptions): Promise<PullSource> {
    const signal = options?.signal;
    const lease = await this.shared.get(signal);
    const plugged = await lease.plug(vdiRef, 'RO', signal);
    let closed = false;
    return {
      kind: 'xen',
      address: lease.appliance.address,
      credential: lease.appliance.psk,
      vmId: lease.appliance.uuid,
      diskId: plugged.uuid,
      size,
      close: async () => {
        if (closed) return;
        closed = true;
        await lease.unplug(plugged);
      },
    };
  }

  /** Unplugs every VDI still plugged and releases the appliance. Calling it twice is harmless. */
  async close(): Promise<void> {
    await this.shared.close();
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
