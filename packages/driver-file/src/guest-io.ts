import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { checkRange, NotFoundError, toStorageError } from '@replikit/core';
import { writeFully } from './block-io.js';
import { acquireLockFile } from './locks.js';
import { assertSafeName } from './names.js';
import { fileVmPaths } from './paths.js';
import { checkImageSize, readVmJson } from './vm-metadata.js';

/**
 * Writes `data` into a disk of a file VM the way its running guest would: straight into the live
 * image. It takes the VM lock for the duration, so it never lands in the middle of a snapshot
 * (it rejects with `E_CONFLICT` while a snapshot is being taken). Used by demos and tests to make a
 * source VM change between runs.
 *
 * @throws {@link @replikit/core!InputError} for a range outside the disk, {@link @replikit/core!NotFoundError} for an unknown VM or disk.
 * @example
 * ```ts
 * await writeGuestDisk('/tmp/vms', 'web', 'system', 4096, new TextEncoder().encode('hello'));
 * ```
 */
export async function writeGuestDisk(
  root: string,
  vmName: string,
  diskId: string,
  offset: number,
  data: Uint8Array,
): Promise<void> {
  const paths = fileVmPaths(root, vmName);
  const vm = await readVmJson(paths.dir);
  assertSafeName(diskId, 'disk id');
  const disk = vm.disks.find((d) => d.id === diskId);
  if (!disk)
    throw new NotFoundError(`VM '${vmName}' has no disk '${diskId}' (it has ${vm.disks.map((d) => d.id).join(', ')})`);
  checkRange(disk.size, offset, data.length, `writing disk '${diskId}' of VM '${vmName}'`);
  const path = join(paths.dir, disk.file);
  await checkImageSize(path, disk.id, disk.size);
  const lock = await acquireLockFile(paths.vmLock, `VM '${vmName}' (a snapshot is being taken)`);
  try {
    const fh = await open(path, 'r+');
    try {
      await writeFully(fh, data, offset);
    } finally {
      await fh.close();
    }
  } catch (error) {
    throw toStorageError(error, `writing disk '${diskId}' of VM '${vmName}'`);
  } finally {
    await lock.release();
  }
}
