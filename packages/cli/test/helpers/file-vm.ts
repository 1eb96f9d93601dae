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

/** Writes random 4 KiB pages into `fraction` of a disk's 64 KiB blocks, as a guest would. */
export async function guestChanges(root: string, vm: string, disk: { id: string; size: number }, fraction: number) {
  const blocks = Math.ceil(disk.size / 65536);
  for (let block = 0; block < blocks; block++) {
    if (Math.random() >= fraction) continue;
    const offset = Math.min(block * 65536 + Math.floor(Math.random() * 16) * 4096, disk.size - 4096);
    await writeGuestDisk(root, vm, disk.id, offset, randomFillSync(new Uint8Array(4096)));
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
