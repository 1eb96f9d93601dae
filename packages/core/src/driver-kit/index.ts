export { AbstractDiskReader } from './abstract-disk-reader.js';
export { AbstractDiskWriter } from './abstract-disk-writer.js';
export { AbstractHypervisor } from './abstract-hypervisor.js';
export {
  assertId,
  assertOneOf,
  assertSize,
  checkDiskRef,
  checkLabel,
  checkReplica,
  checkReplicaSpec,
  checkRestorePoint,
  checkSnapshot,
  type IdCheck,
  MAX_ID_LENGTH,
} from './argument-checks.js';
export { wrapDriverError } from './wrap-error.js';
