import { link, lstat } from 'node:fs/promises';
import { basename, resolve } from 'node:path';
import { FormatError, InputError, type VMInfo } from '@replikit/core';
import { createVmFolder } from './create-file-vm.js';
import { linkError } from './data-file.js';
import { assertSafeName } from './names.js';
import { fileVmPaths } from './paths.js';
import { assertRawImage } from './raw-image-check.js';
import { copyDiskImage } from './sparse-copy.js';
import { toVMInfo, type VmJson } from './vm-metadata.js';

/** One existing raw image given to {@link importFileVM}. */
export interface ImportedImage {
  /** Path of the raw image (a KVM guest's disk made by `qemu-img create -f raw`, say). */
  path: string;
  /** Disk id in the VM. @default the file name without `.raw` or `.img` */
  id?: string;
}

/** What {@link importFileVM} imports. */
export interface ImportFileVMOptions {
  /** VM name, also its folder name and id: a safe single path segment. */
  name: string;
  /** The images, in boot order. */
  images: ImportedImage[];
  /**
   * Copy an image that cannot be hard-linked (another file system) instead of refusing it. The VM
   * then holds a copy: writes to the original no longer reach it.
   * @default false
   */
  copy?: boolean;
}

/** How one image went into the VM folder. */
export interface ImportedDisk {
  /** The disk id. */
  id: string;
  /** The image given. */
  source: string;
  /** `link`: the VM's image is the same file (same inode); `copy`/`reflink`: a copy of it. */
  method: 'link' | 'copy' | 'reflink';
}

/** The VM {@link importFileVM} made and how each image went in. */
export interface ImportFileVMResult {
  /** The VM as `getVM` describes it. */
  vm: VMInfo;
  /** One entry per disk, in boot order. */
  disks: ImportedDisk[];
}

const LINK_REFUSED = new Set(['EXDEV', 'EPERM', 'EACCES', 'EMLINK']);

/**
 * Turns existing raw images into the VM folder `<root>/<name>/` without copying them: each image is
 * hard-linked into the folder (the VM's disk and the original are one file, so what writes the
 * original, such as a KVM guest, writes the VM's disk). Images must be regular raw files (a
 * symbolic link, a qcow2 or VHD file is refused); one that cannot be linked (another file system,
 * or the system forbids it) is refused unless `copy` is set. Atomic: the folder appears complete
 * or not at all.
 *
 * Change tracking does not see writes made to the original: runs of such a VM compare hashes.
 *
 * @throws {@link @replikit/core!InputError} for a bad name or id, two disks with one id, or an
 * image that cannot be linked; {@link @replikit/core!FormatError} for a link or a non-raw image;
 * {@link @replikit/core!ConflictError} when the VM exists.
 */
export async function importFileVM(root: string, options: ImportFileVMOptions): Promise<ImportFileVMResult> {
  const name = assertSafeName(options?.name, 'VM name');
  if (!Array.isArray(options.images) || options.images.length === 0) {
    throw new InputError(`importing VM '${name}' needs at least one image`);
  }
  const absoluteRoot = resolve(root);
  const sources = new Map<string, string>();
  const vm: VmJson = {
    name,
    cpus: 1,
    memoryMiB: 512,
    disks: [],
    powerState: 'stopped',
    bootCount: 0,
  };
  for (const image of options.images) {
    const path = resolve(image.path);
    const id = assertSafeName(image.id ?? basename(path).replace(/\.(raw|img)$/i, ''), `disk id of ${path}`);
    if (sources.has(id)) {
      throw new InputError(`two images give disk id '${id}' (${sources.get(id)} and ${path}); rename one of them`);
    }
    const stats = await lstat(path).catch((error: NodeJS.ErrnoException) => {
      throw new InputError(`image ${path} cannot be read (${error.code ?? error.message}); check the path`);
    });
    if (stats.isSymbolicLink()) throw linkError(path, `image of disk '${id}'`);
    if (!stats.isFile()) {
      throw new FormatError(`image of disk '${id}': ${path} is not a regular file; name the raw image file itself`);
    }
    await assertRawImage(path, id);
    sources.set(id, path);
    vm.disks.push({ id, file: `${id}.raw`, size: stats.size });
  }
  const disks: ImportedDisk[] = [];
  await createVmFolder(absoluteRoot, fileVmPaths(absoluteRoot, name).dir, vm, async (disk, target) => {
    const source = sources.get(disk.id) as string;
    try {
      await link(source, target);
      disks.push({ id: disk.id, source, method: 'link' });
      return;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? '';
      if (!LINK_REFUSED.has(code)) throw error;
      if (!options.copy) {
        const why =
          code === 'EXDEV' ? `is on another file system than ${absoluteRoot}` : `cannot be hard-linked here (${code})`;
        throw new InputError(
          `image ${source} ${why}, and replikit does not copy an image unless asked: put the VM root on the image's file system, or pass --copy (copies ${disk.size} bytes; the VM then holds a copy that writes to the original do not reach)`,
          { details: { path: source, errno: code } },
        );
      }
    }
    const copied = await copyDiskImage(source, target, disk.size);
    disks.push({ id: disk.id, source, method: copied.method === 'reflink' ? 'reflink' : 'copy' });
  });
  return { vm: toVMInfo(name, vm), disks };
}
