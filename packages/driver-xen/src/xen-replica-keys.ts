/** `other_config` key of a replica VM: the name replikit finds it by (with the source uuid). */
export const REPLICA_NAME_KEY = 'replikit:replica';
/** `other_config` key of a replica VM: the uuid of the VM it replicates. */
export const REPLICA_OF_KEY = 'replikit:replica-of';
/** `other_config` key of a replica VM: the job that writes it. */
export const REPLICA_JOB_KEY = 'replikit:job';
/** `other_config` key of a replica VM: the replication method. */
export const REPLICA_METHOD_KEY = 'replikit:method';
/** `other_config` key of a replica VM: `in-progress` or `ready`. */
export const REPLICA_MARK_KEY = 'replikit:mark';
/** `other_config` key of a replica VM: the run holding it, as JSON. */
export const REPLICA_OWNER_KEY = 'replikit:owner';
/** `other_config` key of a replica VM: when replikit last started it (ISO time), a boot mark. */
export const REPLICA_BOOT_KEY = 'replikit:booted-at';
/** `other_config` key of a replica VDI: the size of the source disk, which the VDI may exceed. */
export const REPLICA_SIZE_KEY = 'replikit:size';
/** `other_config` key of a replica VDI: the source disk id it mirrors. */
export const REPLICA_DISK_KEY = 'replikit:disk';
/**
 * `other_config` key of a replica VDI: `<replica uuid>/<userdevice>`, the disk it is (or will be,
 * or was) at. Clones inherit it, so a clone cut off before its pending tags is still found.
 */
export const REPLICA_VDI_OF_KEY = 'replikit:vdi-of';
/** `other_config` key of a restore point (a snapshot of the replica VM): its label. */
export const RESTORE_POINT_KEY = 'replikit:restore-point';

/** Why `start` and `start_on` are blocked on a replica that is ready. */
export const BLOCKED_READY =
  'replikit replica: clone it (or stop replicating it) before starting it, so that the next run does not overwrite it';
/** Why `start` and `start_on` are blocked on a replica being written. */
export const BLOCKED_IN_PROGRESS =
  'replikit is writing this replica; it is incomplete and must not be started until the run ends';
/** `other_config` key of a pending VDI (a clone being written): `<replica uuid>/<userdevice>`. */
export const PENDING_OF_KEY = 'replikit:pending-of';
/** `other_config` key of a pending VDI: the run writing it (empty for a writer without one). */
export const PENDING_RUN_KEY = 'replikit:pending-run';
/**
 * `other_config` key of a CBT base of a reverted replica disk (a metadata-only snapshot taken
 * right after the revert): `<replica uuid>/<userdevice>`. The fingerprint compares with it until
 * the next restore point.
 */
export const CBT_BASE_KEY = 'replikit:cbt-base-of';
