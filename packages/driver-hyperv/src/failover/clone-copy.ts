import { randomUUID } from 'node:crypto';
import { rename, rm } from 'node:fs/promises';
import { createVhdx, type ImageReader, isZero } from '@replikit/formats';

const MiB = 2 ** 20;
/** The clone's blocks: Hyper-V's recommended size for Linux guests, and what replicas use. */
const BLOCK = 2 * MiB;

/**
 * Writes a dynamic VHDX at `target` holding what `image` (a restore point's frozen chain) holds,
 * through a temporary file and a rename. Blocks that read as zeroes are left unallocated.
 */
export async function copyChainToVhdx(image: ImageReader, target: string, signal?: AbortSignal): Promise<void> {
  const tmp = `${target}.${randomUUID()}.tmp`;
  try {
    const writer = await createVhdx(tmp, { size: Math.ceil(image.size / 512) * 512, blockSize: BLOCK });
    try {
      for (let offset = 0; offset < image.size; offset += BLOCK) {
        signal?.throwIfAborted();
        const data = await image.read(offset, Math.min(BLOCK, image.size - offset));
        if (!isZero(data)) await writer.write(offset, data);
      }
    } finally {
      await writer.close();
    }
    await rename(tmp, target);
  } catch (error) {
    await rm(tmp, { force: true });
    throw error;
  }
}
