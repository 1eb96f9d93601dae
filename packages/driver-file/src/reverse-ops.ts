import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import {
  ConflictError,
  type Extent,
  FailedOverError,
  FormatError,
  InputError,
  type LiveDisk,
  NotFoundError,
  toStorageError,
} from '@replikit/core';
import { ALLOCATION_GRANULE } from './allocation-map.js';
import { readFully } from './block-io.js';
import { openDataFile, READ } from './data-file.js';
import { openGuestDisk } from './guest-io.js';
import { assertSafeName } from './names.js';
import { diskImagePath, type FileVmPaths } from './paths.js';
import { readVmJson, type VmDiskJson, type VmJson } from './vm-metadata.js';

/** The bytes compared at a time when a promoted replica is diffed against its base copy. */
const COMPARE_CHUNK = 16 * ALLOCATION_GRANULE;

function diskOf(vm: VmJson, diskId: string, vmId: string): VmDiskJson {
  assertSafeName(diskId, 'disk id');
  const disk = vm.disks.find((d) => d.id === diskId);
  if (!disk) {
    throw new NotFoundError(`VM '${vmId}' has no disk '${diskId}' (it has ${vm.disks.map((d) => d.id).join(', ')})`);
  }
  return disk;
}

async function readAt(fh: FileHandle, offset: number, length: number, what: string): Promise<Buffer> {
  const out = Buffer.alloc(length);
  if ((await readFully(fh, out, 0, length, offset)) < length) {
    throw new FormatError(`${what} is shorter than ${offset + length} bytes; it was truncated`);
  }
  return out;
}

/**
 * See `FailoverHooks.promotedChanges`: the 64 KiB granules of the promoted replica's disk that
 * differ from the copy its promotion kept in `failover-base/` (read in full on both sides; what is
 * sent is only what differs). `undefined` once the failover is committed (the copy is gone).
 */
export async function promotedChanges(
  paths: FileVmPaths,
  replicaId: string,
  diskId: string,
): Promise<Extent[] | undefined> {
  const vm = await readVmJson(paths.dir);
  const f = vm.replica?.failover;
  if (!f || f.state === 'promoting') {
    throw new FailedOverError(`replica '${replicaId}' is not failed over; it has no changes since a promotion`, {
      details: { state: f?.state ?? (vm.replica ? 'replica' : 'plain VM') },
    });
  }
  const disk = diskOf(vm, diskId, replicaId);
  const basePath = join(paths.dir, 'failover-base', disk.file);
  const complete = await fileExists(join(paths.dir, 'failover-base', 'complete.json'));
  if (f.state !== 'promoted' || !complete) return undefined;
  const extents: Extent[] = [];
  const base = await openDataFile(basePath, READ, { what: `the failover base of disk '${diskId}'` });
  try {
    const live = await openDataFile(diskImagePath(paths.dir, disk.file), READ, { what: `disk '${diskId}'` });
    try {
      for (let at = 0; at < disk.size; at += COMPARE_CHUNK) {
        const n = Math.min(COMPARE_CHUNK, disk.size - at);
        const a = await readAt(base, at, n, basePath);
        const b = await readAt(live, at, n, `disk '${diskId}' of replica '${replicaId}'`);
        for (let g = 0; g < n; g += ALLOCATION_GRANULE) {
          const end = Math.min(g + ALLOCATION_GRANULE, n);
          if (a.subarray(g, end).equals(b.subarray(g, end))) continue;
          const last = extents[extents.length - 1];
          if (last && last.offset + last.length === at + g) last.length += end - g;
          else extents.push({ offset: at + g, length: end - g });
        }
      }
    } finally {
      await live.close();
    }
  } catch (error) {
    throw toStorageError(error, `comparing disk '${diskId}' of replica '${replicaId}' with its failover base`);
  } finally {
    await base.close();
  }
  return extents;
}

/** True when the file exists (its content is not read). */
async function fileExists(path: string): Promise<boolean> {
  try {
    const fh = await openDataFile(path, READ, { what: 'a failover marker' });
    await fh.close();
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw toStorageError(error, `reading ${path}`);
  }
}

/**
 * See `FailoverHooks.openLiveDisk`. `read` opens the live image (a running promoted replica
 * included); `write` is refused (`E_CONFLICT`) on a replica, a clone or a VM that is not stopped,
 * and goes through the guest write path, so a tracked VM's change bitmap records every write.
 */
export async function openLiveDisk(
  root: string,
  paths: FileVmPaths,
  vmId: string,
  diskId: string,
  mode: 'read' | 'write',
): Promise<LiveDisk> {
  if (mode !== 'read' && mode !== 'write') throw new InputError(`mode must be 'read' or 'write', got ${String(mode)}`);
  const vm = await readVmJson(paths.dir);
  const disk = diskOf(vm, diskId, vmId);
  const image = diskImagePath(paths.dir, disk.file);
  const what = `disk '${diskId}' of VM '${vmId}'`;
  if (mode === 'write') {
    if (vm.replica || vm.clone || vm.powerState !== 'stopped') {
      throw new ConflictError(
        `${what} is not written by reverse replication: ${vm.replica ? 'it is a replica' : vm.clone ? 'it is a test clone' : `the VM is ${vm.powerState}; shut it down first`}`,
        { details: { vmId, powerState: vm.powerState } },
      );
    }
  }
  const fh = await openDataFile(image, READ, { what });
  let guest: Awaited<ReturnType<typeof openGuestDisk>> | undefined;
  try {
    if (mode === 'write') guest = await openGuestDisk(root, vmId, diskId);
  } catch (error) {
    await fh.close();
    throw error;
  }
  let closed = false;
  return {
    size: disk.size,
    read: (offset, length) => readAt(fh, offset, length, what),
    async write(offset, data) {
      if (!guest) throw new ConflictError(`${what} was opened for reading only`);
      await guest.write(offset, data);
    },
    async close() {
      if (closed) return;
      closed = true;
      try {
        await guest?.close();
      } finally {
        await fh.close();
      }
    },
  };
}
