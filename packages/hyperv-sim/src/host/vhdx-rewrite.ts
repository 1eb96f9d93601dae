import { randomUUID } from 'node:crypto';
import { rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { createVhdx, openVhdx, type VhdxReader } from '@replikit/formats';

/** A VHDX block's BAT state when it holds data of its own (fully or partially present). */
const OWN_STATES = new Set([6, 7]);

/** The block indexes whose data `reader`'s own file holds. */
function ownBlocks(reader: VhdxReader): number[] {
  const blocks: number[] = [];
  for (let b = 0; b < reader.states.length; b++) if (OWN_STATES.has(reader.states[b] ?? 0)) blocks.push(b);
  return blocks;
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
      const blocks = new Set([...ownBlocks(view), ...alsoOwn.flatMap(ownBlocks)]);
      for (const b of [...blocks].sort((x, y) => x - y)) {
        const offset = b * view.blockSize;
        const length = Math.min(view.blockSize, view.size - offset);
        await writer.write(offset, await view.read(offset, length));
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
