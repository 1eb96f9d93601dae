import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, rename, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { ConflictError, InputError, type PowerState, toStorageError, type VMInfo } from '@replikit/core';
import { fsyncDir } from './atomic-write.js';
import { ChangeBitmap, cbtPathOf, stampWithOwnTime, writeChangeBitmap } from './change-bitmap.js';
import { isAlive } from './locks.js';
import { assertSafeName } from './names.js';
import { fileVmPaths } from './paths.js';
import { toVMInfo, type VmJson, writeVmJson } from './vm-metadata.js';

/** What {@link createFileVM} creates. */
export interface CreateFileVMOptions {
  /** VM name, also its folder name and id: a safe single path segment. */
  name: string;
  /** Virtual CPUs. @default 1 */
  cpus?: number;
  /** Memory in MiB. @default 512 */
  memoryMiB?: number;
  /** Networks the VM is attached to. */
  networks?: string[];
  /** Disks in boot order; each becomes a sparse raw image `<id>.raw` of `size` bytes (reads as zero). */
  disks: Array<{ id: string; size: number; label?: string }>;
  /** Initial power state. @default 'stopped' */
  powerState?: PowerState;
  /**
   * Changed-block tracking (like XAPI's `VDI.enable_cbt`): each disk gets a dirty bitmap
   * `<image>.cbt` that guest writes through {@link writeGuestDisk} / {@link openGuestDisk} keep up to
   * date, so that snapshots store only the changed 64 KiB blocks and the driver's `changeTracker`
   * reports them. Writes to the image by anything else are detected by its size, mtime, ctime and
   * inode and make the next snapshot a full copy (see the package README for the limit).
   * @default false
   */
  changeTracking?: boolean;
}

/**
 * Creates the VM folder `<root>/<name>/` with its `vm.json` and sparse raw images, atomically (built
 * in a temporary folder, then renamed), creating `root` when needed.
 *
 * @returns The new VM, as `getVM` would describe it (its id is `name`).
 * @throws {@link @replikit/core!InputError} for a hostile name or a bad size, {@link @replikit/core!ConflictError} when the VM exists.
 * @example
 * ```ts
 * await createFileVM('/tmp/vms', { name: 'web', disks: [{ id: 'system', size: 64 * 1024 ** 2 }] });
 * const hv = createFileDriver({ root: '/tmp/vms' });
 * const snapshot = await hv.snapshot('web', 'before-upgrade');
 * ```
 */
export async function createFileVM(root: string, options: CreateFileVMOptions): Promise<VMInfo> {
  const paths = fileVmPaths(root, options.name);
  const vm: VmJson = {
    name: options.name,
    cpus: positive(options.cpus ?? 1, 'cpus'),
    memoryMiB: positive(options.memoryMiB ?? 512, 'memoryMiB'),
    ...(options.networks ? { networks: [...options.networks] } : {}),
    disks: (options.disks ?? []).map((d, i) => {
      const id = assertSafeName(d.id, `disks[${i}].id`);
      if (!Number.isSafeInteger(d.size) || d.size < 0) {
        throw new InputError(`disks[${i}].size must be a whole number of bytes ≥ 0, got ${d.size}`);
      }
      return { id, file: `${id}.raw`, size: d.size, ...(d.label === undefined ? {} : { label: d.label }) };
    }),
    powerState: options.powerState ?? 'stopped',
    bootCount: 0,
    ...(options.changeTracking === true ? { changeTracking: true } : {}),
  };
  if (options.changeTracking !== undefined && typeof options.changeTracking !== 'boolean') {
    throw new InputError(`changeTracking must be true or false, got ${JSON.stringify(options.changeTracking)}`);
  }
  await createVmFolder(resolve(root), paths.dir, vm);
  return toVMInfo(options.name, vm);
}

/**
 * Creates the folder `dir` (a child of `root`) holding `vm` and a sparse image for each of its
 * disks (or what `place` puts at each image's path), atomically: everything is built in
 * `<root>/.tmp-<pid>-<hex>/`, fsynced, then renamed.
 *
 * @throws {@link @replikit/core!ConflictError} when `dir` exists.
 */
export async function createVmFolder(
  root: string,
  dir: string,
  vm: VmJson,
  place?: (disk: VmJson['disks'][number], path: string) => Promise<void>,
): Promise<void> {
  const tmp = join(root, `.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    await mkdir(root, { recursive: true });
    await sweepRoot(root);
    await mkdir(tmp);
    for (const disk of vm.disks) {
      if (place) {
        await place(disk, join(tmp, disk.file));
        continue;
      }
      const fh = await open(join(tmp, disk.file), 'wx', 0o644);
      try {
        await fh.truncate(disk.size);
        await fh.sync();
        if (vm.changeTracking) {
          // Nothing written yet: an empty bitmap counting from the creation (epoch '').
          const cbt = new ChangeBitmap(disk.size, '', await stampWithOwnTime(fh));
          await writeChangeBitmap(cbtPathOf(join(tmp, disk.file)), cbt);
        }
      } finally {
        await fh.close();
      }
    }
    await writeVmJson(tmp, vm);
    await fsyncDir(tmp);
    try {
      await rename(tmp, dir);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOTEMPTY' || code === 'EEXIST' || code === 'ENOTDIR') {
        throw new ConflictError(`${dir} already exists; pick another name or delete it first`, { details: { dir } });
      }
      throw error;
    }
    await fsyncDir(root);
  } catch (error) {
    await rm(tmp, { recursive: true, force: true });
    throw toStorageError(error, `creating ${dir}`);
  }
}

/**
 * Removes what crashed processes left in `root`: folders being built (`.tmp-<pid>-…`) or deleted
 * (`.deleting-<pid>-…`) by a process that no longer runs.
 */
export async function sweepRoot(root: string): Promise<void> {
  for (const entry of await readdir(root)) {
    const match = /^\.(?:tmp|deleting)-(\d+)-/.exec(entry);
    if (match && !isAlive(Number(match[1]))) await rm(join(root, entry), { recursive: true, force: true });
  }
}

function positive(value: number, what: string): number {
  if (!Number.isSafeInteger(value) || value < 1)
    throw new InputError(`${what} must be a whole number ≥ 1, got ${value}`);
  return value;
}
