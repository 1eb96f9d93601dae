import { isAbsolute, join, resolve } from 'node:path';
import { InputError } from '@replikit/core';
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
