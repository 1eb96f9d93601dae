import { createHash, randomFillSync } from 'node:crypto';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import type { DiskRef, Hypervisor } from '@replikit/core';
import { createFileVM, writeGuestDisk } from '@replikit/driver-file';

/** Creates a file VM whose disks are filled with random data in `fill` of their 64 KiB blocks. */
export async function createRandomVm(
  root: string,
  name: string,
  disks: Array<{ id: string; size: number }>,
  fill = 1,
): Promise<void> {
  await createFileVM(root, { name, disks });
  for (const disk of disks) {
    const handle = await open(join(root, name, `${disk.id}.raw`), 'r+');
    try {
      const block = Buffer.alloc(65536);
      for (let offset = 0; offset < disk.size; offset += block.length) {
        if (Math.random() >= fill) continue;
        randomFillSync(block);
        await handle.write(block, 0, Math.min(block.length, disk.size - offset), offset);
      }
    } finally {
      await handle.close();
    }
  }
}

/**
 * Writes `writeSize` random bytes (a 4 KiB page by default, at a random page of the block) into
 * `fraction` of a disk's 64 KiB blocks, as a guest would. Tests that need a run to last (to kill it
 * mid-transfer) rewrite whole blocks: a page costs only its changed bytes on the wire.
 */
export async function guestChanges(
  root: string,
  vm: string,
  disk: { id: string; size: number },
  fraction: number,
  writeSize = 4096,
) {
  const blocks = Math.ceil(disk.size / 65536);
  const pages = Math.max(1, 65536 / writeSize);
  for (let block = 0; block < blocks; block++) {
    if (Math.random() >= fraction) continue;
    const start = block * 65536 + Math.floor(Math.random() * pages) * writeSize;
    const length = Math.min(writeSize, disk.size - block * 65536);
    const offset = Math.min(start, disk.size - length);
    await writeGuestDisk(root, vm, disk.id, offset, randomFillSync(new Uint8Array(length)));
  }
}

/** sha256 of a disk read through a driver. */
export async function digestOf(hypervisor: Hypervisor, disk: DiskRef): Promise<string> {
  const reader = await hypervisor.openReader(disk);
  try {
    const hash = createHash('sha256');
    for (let offset = 0; offset < reader.size; offset += 1 << 20) {
      hash.update(await reader.read(offset, Math.min(1 << 20, reader.size - offset)));
    }
    return hash.digest('hex');
  } finally {
    await reader.close();
  }
}
