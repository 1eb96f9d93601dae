import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Hypervisor, Replica } from '@replikit/core';
import type { DriverConformanceFixtures } from '@replikit/core/testing';
import {
  createFileDriver,
  createFileVM,
  type FileDriverOptions,
  fileVmPaths,
  readVmJson,
  writeGuestDisk,
} from '../../src/index.js';
import { settleDiscards } from '../../src/trash.js';

/** Temporary folders made by {@link makeTempRoot}, removed by {@link removeTempRoots}. */
const made: string[] = [];

/** A new empty folder under the OS temporary folder. */
export async function makeTempRoot(tag = 'rk-file-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), tag));
  made.push(dir);
  return dir;
}

/** Removes every folder {@link makeTempRoot} made. */
export async function removeTempRoots(): Promise<void> {
  await settleDiscards();
  for (const dir of made.splice(0)) await rm(dir, { recursive: true, force: true });
}

/** The root each driver made by {@link createTempDriver} works in. */
export const driverRoots = new WeakMap<Hypervisor, string>();

/** A file driver over a fresh temporary root. */
export async function createTempDriver(options: Omit<FileDriverOptions, 'root'> = {}): Promise<Hypervisor> {
  const root = await makeTempRoot();
  const hv = createFileDriver({ ...options, root });
  driverRoots.set(hv, root);
  return hv;
}

/** Writes into a replica's image with plain fs calls, as a user editing the replica would. */
export async function writeBehindReplikit(
  root: string,
  replica: Replica,
  diskId: string,
  offset: number,
  data: Uint8Array,
): Promise<void> {
  const paths = fileVmPaths(root, replica.id);
  const vm = await readVmJson(paths.dir);
  const disk = vm.disks.find((d) => d.id === diskId);
  if (!disk) throw new Error(`no disk ${diskId}`);
  const fh = await open(join(paths.dir, disk.file), 'r+');
  try {
    await fh.write(data, 0, data.length, offset);
  } finally {
    await fh.close();
  }
}

/** The conformance fixtures of the file driver. */
export const fileFixtures: DriverConformanceFixtures = {
  createSourceVM: (hv, spec) => createFileVM(driverRoots.get(hv)!, { name: spec.name, disks: spec.disks }),
  writeGuest: (hv, vmId, diskId, offset, data) => writeGuestDisk(driverRoots.get(hv)!, vmId, diskId, offset, data),
  writeOutside: (hv, replica, diskId, offset, data) =>
    writeBehindReplikit(driverRoots.get(hv)!, replica, diskId, offset, data),
  cleanup: removeTempRoots,
};
