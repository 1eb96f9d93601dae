import type { ChangeTracker, Extent, Snapshot } from '../contracts/index.js';

/** Block size of the memory driver: the granule of its change tracking and `allocated()` extents. */
export const MEMORY_BLOCK_SIZE = 4096;
const B = MEMORY_BLOCK_SIZE;

/** A snapshot the memory driver keeps, with the blocks its guest changed since the one before. */
export interface MemorySnapshotRecord {
  snapshot: Snapshot;
  /** Creation order among all snapshots of the driver. */
  seq: number;
  /** Content per disk; undefined once deleted with `keepMetadata` (only `changed` is kept). */
  data?: Map<string, Uint8Array>;
  /** Blocks per disk written since the previous snapshot of the VM. */
  changed: Map<string, Set<number>>;
}

/** Tracker faults the suite's own tests inject (see `MemoryDriverFaults`). */
export interface MemoryTrackerFaults {
  /** Leave out one extent (the middle one). */
  dropExtent?: boolean;
  /** Leave out the last block when it is shorter than a whole block. */
  dropTailBlock?: boolean;
}

/** The blocks a byte range touches. */
export function blocksOf(offset: number, length: number): number[] {
  const out: number[] = [];
  for (let b = Math.floor(offset / B); b * B < offset + length; b++) out.push(b);
  return out;
}

/** Ascending extents of the given blocks, merged, clipped to `size`. */
export function extentsOf(blocks: Iterable<number>, size: number): Extent[] {
  const out: Extent[] = [];
  for (const b of [...blocks].sort((x, y) => x - y)) {
    const offset = b * B;
    const length = Math.min(B, size - offset);
    const last = out[out.length - 1];
    if (last && last.offset + last.length === offset) last.length += length;
    else out.push({ offset, length });
  }
  return out;
}

/**
 * The memory driver's change tracker: the union of the blocks changed by the snapshots after
 * `base` up to `current`; `undefined` (hash-diff) when either is unknown or they are out of order.
 */
export function createMemoryTracker(
  snaps: Map<string, MemorySnapshotRecord>,
  faults: MemoryTrackerFaults,
): ChangeTracker {
  return {
    async changes(disk, base, current) {
      const a = snaps.get(base.id);
      const b = snaps.get(current.id);
      if (!a || !b || a.snapshot.vmId !== b.snapshot.vmId || a.seq > b.seq) return undefined;
      const blocks = new Set<number>();
      for (const r of snaps.values()) {
        if (r.snapshot.vmId === a.snapshot.vmId && r.seq > a.seq && r.seq <= b.seq) {
          for (const block of r.changed.get(disk.id) ?? []) blocks.add(block);
        }
      }
      const size = b.snapshot.disks.find((d) => d.id === disk.id)?.size ?? 0;
      const extents = extentsOf(blocks, size);
      if (faults.dropExtent && extents.length > 0) extents.splice(extents.length >> 1, 1);
      const tail = extents[extents.length - 1];
      if (faults.dropTailBlock && tail && tail.offset + tail.length === size && size % B !== 0) {
        tail.length -= size % B;
        if (tail.length === 0) extents.pop();
      }
      return (async function* () {
        yield* extents;
      })();
    },
  };
}
