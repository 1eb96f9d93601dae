import type { DiskRef, Extent, OperationOptions, Snapshot } from '../contracts/index.js';
import { AbstractDiskReader } from '../driver-kit/abstract-disk-reader.js';
import { MEMORY_BLOCK_SIZE, MemoryHypervisor } from './memory-driver.js';

/** Change-tracker faults the suite's own tests inject (see {@link MemoryDriverFaults}). */
export interface MemoryTrackerFaults {
  /** Leave out one extent (the middle one). */
  dropExtent?: boolean;
  /** Leave out the last block when it is shorter than a whole block. */
  dropTailBlock?: boolean;
}

/**
 * Faults the conformance suite's own tests inject into the memory driver to prove its checks catch
 * them. A real driver never has these.
 */
export interface MemoryDriverFaults extends MemoryTrackerFaults {
  /** `snapshot()` ignores its `AbortSignal`. */
  ignoreSignal?: boolean;
  /** `close()` leaves the writers it handed out open. */
  leaveWriterOpen?: boolean;
}

/**
 * The memory driver with faults injected: each override breaks one promise of the contract, the
 * way a buggy driver would. Kept apart so that the reference driver stays a clean model to copy.
 */
export class FaultyMemoryHypervisor extends MemoryHypervisor {
  constructor(private readonly faults: MemoryDriverFaults) {
    super();
  }

  override snapshot(vmId: string, label: string, options?: OperationOptions): Promise<Snapshot> {
    return super.snapshot(vmId, label, this.faults.ignoreSignal ? {} : options);
  }

  override async close(): Promise<void> {
    if (this.faults.leaveWriterOpen) {
      for (const handle of this.handedOut) if (!(handle instanceof AbstractDiskReader)) this.handedOut.delete(handle);
    }
    await super.close();
  }

  protected override async _changes(disk: DiskRef, base: Snapshot, current: Snapshot) {
    const answer = await super._changes(disk, base, current);
    if (!answer) return undefined;
    const extents: Extent[] = [];
    for await (const extent of answer) extents.push(extent);
    if (this.faults.dropExtent && extents.length > 0) extents.splice(extents.length >> 1, 1);
    const size = current.disks.find((d) => d.id === disk.id)?.size ?? 0;
    const tail = extents.at(-1);
    const partial = size % MEMORY_BLOCK_SIZE;
    if (this.faults.dropTailBlock && tail && tail.offset + tail.length === size && partial !== 0) {
      tail.length -= partial;
      if (tail.length === 0) extents.pop();
    }
    return (async function* () {
      yield* extents;
    })();
  }
}
