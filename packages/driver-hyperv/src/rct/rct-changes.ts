import { DriverError, type Extent } from '@replikit/core';
import type { PowerShellLink } from '../powershell/powershell-link.js';
import { GET_DISK_CHANGES } from '../scripts/hyperv-scripts.js';

/** What `GetVirtualDiskChanges` answers (Msvm_ImageManagementService). */
interface ChangesRow {
  ReturnValue: number;
  ProcessedByteLength?: number;
  ChangedByteOffsets?: number[];
  ChangedByteLengths?: number[];
}

/**
 * The ranges of the disk file `path` changed since RCT id `limitId`, over `[0, size)`: one
 * `GetVirtualDiskChanges` call after another, each starting where the previous one's
 * `ProcessedByteLength` stopped. Sorted, merged, clipped to the disk. `undefined` when Hyper-V
 * cannot tell (a non-zero `ReturnValue`: the id is unknown or gone, the file is not tracked).
 */
export async function rctChangedExtents(
  link: PowerShellLink,
  path: string,
  limitId: string,
  size: number,
): Promise<Extent[] | undefined> {
  const found: Extent[] = [];
  for (let offset = 0; offset < size; ) {
    const [row] = await link.call<ChangesRow>(GET_DISK_CHANGES, { path, limitId, offset, length: size - offset });
    if (row?.ReturnValue !== 0) return undefined;
    const processed = Number(row.ProcessedByteLength);
    if (!Number.isSafeInteger(processed) || processed <= 0) {
      throw new DriverError(
        `GetVirtualDiskChanges of ${path} processed ${row.ProcessedByteLength} bytes at offset ${offset}; Hyper-V answered nothing to continue from`,
      );
    }
    const offsets = row.ChangedByteOffsets ?? [];
    const lengths = row.ChangedByteLengths ?? [];
    for (const [i, start] of offsets.entries()) {
      const end = Math.min(size, Number(start) + Number(lengths[i] ?? 0));
      if (end > start) found.push({ offset: Number(start), length: end - Number(start) });
    }
    offset += processed;
  }
  found.sort((a, b) => a.offset - b.offset);
  const merged: Extent[] = [];
  for (const e of found) {
    const last = merged.at(-1);
    if (last && e.offset <= last.offset + last.length) {
      last.length = Math.max(last.length, e.offset + e.length - last.offset);
    } else merged.push({ ...e });
  }
  return merged;
}
