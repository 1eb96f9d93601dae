/**
 * `@replikit/driver-file`: the embedded replikit driver. A VM is a folder of raw disk images with a
 * `vm.json`; snapshots, replicas, restore points and modification detection live on the local file
 * system, crash-safely.
 *
 * @packageDocumentation
 */
export { ALLOCATION_GRANULE, AllocationMap } from './allocation-map.js';
export { type CreateFileVMOptions, createFileVM } from './create-file-vm.js';
export {
  createFileDriver,
  FILE_DRIVER_CAPABILITIES,
  FILE_DRIVER_KIND,
  type FileDriverOptions,
} from './file-driver.js';
export { type FileDriverJobOptions, fileDriver, fileDriverOptionsSchema } from './file-driver-definition.js';
export { type GuestDiskHandle, openGuestDisk, writeGuestDisk } from './guest-io.js';
export {
  type ImportedDisk,
  type ImportedImage,
  type ImportFileVMOptions,
  type ImportFileVMResult,
  importFileVM,
} from './import-file-vm.js';
export { assertSafeName, MAX_NAME_LENGTH } from './names.js';
export { diskImagePath, type FileVmPaths, fileVmPaths, overlayPath } from './paths.js';
export type { FaultHook, FaultPoint } from './replica-commit.js';
export { handOffRemovals, settleDiscards } from './trash.js';
export {
  type CloneJson,
  parseVmJson,
  type ReplicaFailoverJson,
  type ReplicaJson,
  readVmJson,
  type VmDiskJson,
  type VmJson,
} from './vm-metadata.js';
