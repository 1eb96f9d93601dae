import { realpath } from 'node:fs/promises';
import { isAbsolute, join, resolve, sep } from 'node:path';
import { InputError, toStorageError } from '@replikit/core';
import { assertSafeName } from './names.js';

/** Name of the metadata file of a VM folder. */
export const VM_JSON = 'vm.json';

/** Where every file of one VM (or replica) folder lives. */
export interface FileVmPaths {
  /** The VM folder: `<root>/<vmName>`. */
  dir: string;
  /** The VM's metadata: `<dir>/vm.json`. */
  vmJson: string;
  /** Snapshots: `<dir>/snapshots/<snapshotId>/`. */
  snapshots: string;
  /** Lock held while a snapshot is taken or deleted, and by guest writes: `<dir>/.lock`. */
  vmLock: string;
  /** Restore points of a replica: `<dir>/restore-points.json`. */
  restorePoints: string;
  /** Undo files of a replica: `<dir>/undo/<restorePointId>/<diskFile>.undo`. */
  undo: string;
  /** Marker of a commit in progress: `<dir>/commit.json`. */
  commitMarker: string;
  /** Marker of a revert in progress: `<dir>/revert.json`. */
  revertMarker: string;
  /** Lock held while a replica is committed, reverted or recovered: `<dir>/.replica.lock`. */
  replicaLock: string;
}

/**
 * The paths of the VM folder `<root>/<vmName>`.
 *
 * @throws {@link @replikit/core!InputError} when `vmName` is not a safe single path segment.
 * @example
 * ```ts
 * const paths = fileVmPaths('/var/lib/replikit', 'web-01');
 * paths.vmJson; // '/var/lib/replikit/web-01/vm.json'
 * ```
 */
export function fileVmPaths(root: string, vmName: string): FileVmPaths {
  const dir = join(resolve(root), assertSafeName(vmName, 'VM name'));
  return {
    dir,
    vmJson: join(dir, VM_JSON),
    snapshots: join(dir, 'snapshots'),
    vmLock: join(dir, '.lock'),
    restorePoints: join(dir, 'restore-points.json'),
    undo: join(dir, 'undo'),
    commitMarker: join(dir, 'commit.json'),
    revertMarker: join(dir, 'revert.json'),
    replicaLock: join(dir, '.replica.lock'),
  };
}

/** The raw image of a disk whose vm.json `file` is `file`, in the VM folder `dir`. */
export function diskImagePath(dir: string, file: string): string {
  return join(dir, assertSafeName(file, 'disk file name'));
}

/** The overlay (redo log) of a replica disk: `<dir>/<file>.overlay`. */
export function overlayPath(dir: string, file: string): string {
  return `${diskImagePath(dir, file)}.overlay`;
}

/** The writer lock of a replica disk: `<dir>/<file>.lock`. */
export function diskLockPath(dir: string, file: string): string {
  return `${diskImagePath(dir, file)}.lock`;
}

/** The folder holding the undo files that take a replica from `pointId` back to the point before. */
export function undoDir(dir: string, pointId: string): string {
  return join(dir, 'undo', assertSafeName(pointId, 'restore point id'));
}

/** The undo file of one disk for `pointId`. */
export function undoPath(dir: string, pointId: string, file: string): string {
  return join(undoDir(dir, pointId), `${assertSafeName(file, 'disk file name')}.undo`);
}

/** The folder of one snapshot of the VM folder `dir`. */
export function snapshotDir(dir: string, snapshotId: string): string {
  return join(dir, 'snapshots', assertSafeName(snapshotId, 'snapshot id'));
}

/**
 * Reads the `root` a replica or disk reference carries in its `meta` (set when a replica was
 * placed outside the driver's root), or returns `fallback`.
 *
 * @throws {@link @replikit/core!InputError} when `meta.root` is present but not an absolute path.
 */
export function rootFromMeta(meta: Record<string, unknown> | undefined, fallback: string): string {
  const root = meta?.root;
  if (root === undefined) return fallback;
  if (typeof root !== 'string' || !isAbsolute(root) || root.includes('\0')) {
    throw new InputError(`meta.root must be an absolute folder path, got ${JSON.stringify(root)}`);
  }
  return resolve(root);
}

/**
 * The root of a driver confined to `root` (`createFileDriver({ confine: true })`, as
 * `replikit-agent` creates it): the `root` a replica or disk reference claims in its `meta`, or a
 * placement asks for, must be `root` itself; anything else is refused, so that a peer cannot
 * point the driver at a folder outside it.
 *
 * @param claimed - The folder claimed (a `meta.root` or `placement.root`), `undefined` when none.
 * @param root - The driver's root, already resolved.
 * @param what - What claims it, for the message (`replica 'web'`).
 * @throws {@link @replikit/core!InputError} (`details.confined: true`) when `claimed` is another folder.
 */
export function confinedRoot(claimed: string | undefined, root: string, what: string): string {
  if (claimed === undefined || claimed === root) return root;
  throw new InputError(
    `${what} is placed in ${claimed}, outside ${root}, the only folder this driver may touch ` +
      '(replikit-agent serves only its --root); place the replica under that folder or run an agent for the other one',
    { details: { confined: true, root, claimed } },
  );
}

/**
 * Checks that the folder `dir`, once symbolic links are resolved, still lies inside `root` (also
 * resolved): a folder under the root that is a link to elsewhere is refused. A `dir` that does not
 * exist yet passes (it will be created under `root`).
 *
 * @throws {@link @replikit/core!InputError} (`details.confined: true`) when `dir` leads outside `root`.
 */
export async function assertInsideRoot(dir: string, root: string): Promise<void> {
  let real: string;
  let realRoot: string;
  try {
    [real, realRoot] = await Promise.all([realpath(dir), realpath(root)]);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw toStorageError(error, `resolving ${dir}`);
  }
  if (real !== realRoot && !real.startsWith(realRoot.endsWith(sep) ? realRoot : `${realRoot}${sep}`)) {
    throw new InputError(
      `${dir} leads to ${real} (a symbolic link), outside ${realRoot}, the only folder this driver may touch; ` +
        'replace the link with the folder itself',
      { details: { confined: true, root: realRoot, dir, real } },
    );
  }
}
