/**
 * `other_config` key of a replica VM that is failed over: JSON `{ state, pointId }` with state
 * `promoting` (a promotion under way), `promoted` (running, undo possible) or `committed`.
 */
export const FAILOVER_KEY = 'replikit:failover';
/**
 * `other_config` key of a VM that was a replica until a permanent failover: JSON
 * `{ name, of, pointId, retiredAt }` (the replica name and source uuid it had). `ensureReplica`
 * of that name refuses it, so no run can overwrite the production VM.
 */
export const RETIRED_KEY = 'replikit:retired-replica';
/**
 * `other_config` key of a test-failover clone VM: JSON `{ replicaId, pointId, operationId,
 * createdAt, state }`, state `building` until its disks are tagged and its networks set, then `ready`.
 */
export const CLONE_KEY = 'replikit:clone';
/** `other_config` key of a clone's own VDI: the clone VM's uuid (`destroyClone` deletes these only). */
export const CLONE_VDI_KEY = 'replikit:clone-vdi-of';
/** The pseudo-run that holds a replica while a failover hook changes it. */
export const failoverRunId = (replicaId: string): string => `failover-${replicaId}`;
