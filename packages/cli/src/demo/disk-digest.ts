import { createHash } from 'node:crypto';
import type { DiskRef, Hypervisor } from '@replikit/core';

/** The sha256 of a whole disk's virtual content, read through its driver in 4 MiB requests. */
export async function diskDigest(hypervisor: Hypervisor, disk: DiskRef): Promise<string> {
  const reader = await hypervisor.openReader(disk);
  try {
    const hash = createHash('sha256');
    const step = 4 * 1024 * 1024;
    for (let offset = 0; offset < reader.size; offset += step) {
      hash.update(await reader.read(offset, Math.min(step, reader.size - offset)));
    }
    return hash.digest('hex');
  } finally {
    await reader.close();
  }
}
