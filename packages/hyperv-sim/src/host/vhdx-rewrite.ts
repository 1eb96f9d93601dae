import { randomUUID } from 'node:crypto';
import { rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { createVhdx, openVhdx, type VhdxReader } from '@replikit/formats';

/** A VHDX block's BAT state when it holds data of its own (fully or partially present). */
const OWN_STATES = new Set([6, 7]);

/**
 * The byte ranges whose data `reader`'s own file holds, in its own block size (a differencing
 * child's blocks are often larger or smaller than its parent's).
 */
function ownRanges(reader: VhdxReader): [number, number][] {
  const ranges: [number, number][] = [];
  for (let b = 0; b < reader.states.length; b++) {
    const start = b * reader.blockSize;
    if (start >= reader.size || !OWN_STATES.has(reader.states[b] ?? 0)) continue;
    ranges.push([start, Math.min(reader.size, start + reader.blockSize)]);
  }
  return ranges;
}

/**
 * Writes a new VHDX at `target` (through a temporary file and a rename) whose content equals
 * `view` on every block that `view`'s own file or one of `alsoOwn` holds, on top of `parentPath`
 * (or no parent). The formats package writes new files only, so the simulator changes a disk by
 * rewriting it this way; `edit` then applies writes to the new file before it is closed.
 */
export async function rewriteVhdx(
  target: string,
  view: VhdxReader,
  alsoOwn: readonly VhdxReader[],
  parentPath: string | undefined,
  edit: (write: (offset: number, data: Uint8Array) => Promise<void>) => Promise<void> = async () => {},
): Promise<void> {
  const tmp = join(dirname(target), `.${randomUUID()}.tmp.vhdx`);
  const parent = parentPath ? await openVhdx(parentPath) : undefined;
  try {
    const writer = await createVhdx(tmp, {
      size: view.size,
      blockSize: view.blockSize,
      logicalSectorSize: view.info.logicalSectorSize as 512 | 4096,
      sync: false,
      ...(parent ? { parent } : {}),
    });
    try {
      const ranges = [...ownRanges(view), ...alsoOwn.flatMap(ownRanges)].sort((x, y) => x[0] - y[0]);
      let done = 0; // everything below `done` is copied
      for (const [start, end] of ranges) {
        for (let offset = Math.max(start, done); offset < end; ) {
          const length = Math.min(view.blockSize, end - offset);
          await writer.write(offset, await view.read(offset, length));
          offset += length;
        }
        done = Math.max(done, end);
      }
      await edit((offset, data) => writer.write(offset, data));
    } finally {
      await writer.close();
    }
  } catch (error) {
    await rm(tmp, { force: true });
    throw error;
  } finally {
    await parent?.close();
  }
  await rename(tmp, target);
}
