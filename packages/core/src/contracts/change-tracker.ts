import type { DiskRef, Extent, OperationOptions } from './disk.js';
import type { Snapshot } from './hypervisor.js';

/** Reports the extents of a disk that changed between two snapshots (Xen CBT, Hyper-V RCT). */
export interface ChangeTracker {
  /**
   * The extents of `disk` that changed between `base` and `current`, ascending and not
   * overlapping, or `undefined` when the driver cannot tell (the engine then falls back to a hash
   * diff). `disk` is the disk as listed in `current`.
   */
  changes(
    disk: DiskRef,
    base: Snapshot,
    current: Snapshot,
    options?: OperationOptions,
  ): Promise<AsyncIterable<Extent> | undefined>;
  /**
   * Optional, for `replikit plan`: the extents of `disk` (a disk of the live VM) written since
   * snapshot `base`, as `changes(disk, base, next)` would report them for a snapshot `next` taken
   * now; `undefined` when such a snapshot could not vouch for the interval (outside writes, a lost
   * map). Takes no snapshot and writes nothing. A driver that has it says so by having it.
   */
  pending?(disk: DiskRef, base: Snapshot, options?: OperationOptions): Promise<AsyncIterable<Extent> | undefined>;
}
