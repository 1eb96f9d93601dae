import type { EventEmitter } from 'eventemitter3';
import type { BackupSink } from '../contracts/backup-sink.js';
import type { Hypervisor, TargetFence } from '../contracts/hypervisor.js';
import type { ReplicationCacheProvider } from '../contracts/replication-cache.js';
import type { Transport } from '../contracts/transport.js';
import type { RuleSet } from '../rules/rule.js';
import type { BlockHasher } from './block-hasher.js';
import type { BufferShelf } from './buffer-shelf.js';
import type { DriverRegistry } from './driver-registry.js';
import type { EngineEvents } from './events.js';
import type { ReplicaLease, SaveRunOptions } from './replica-lease.js';
import type { RunRecord } from './run-record.js';
import type { StateStore } from './state-store.js';

/** What a run needs from the engine that started it. */
export interface RunDependencies {
  store: StateStore;
  drivers: DriverRegistry;
  events: EventEmitter<EngineEvents>;
  hasher: BlockHasher;
  /** The run's transport; it is given the run as a flat {@link RunRecord}. */
  transport: (target: Hypervisor, record: RunRecord, hasher: BlockHasher) => Transport | Promise<Transport>;
  /** The target driver of a job, when not the registry's (a remote agent's); see `EngineOptions.targetDriver`. */
  targetDriver?: (job: RunRecord['job']) => Hypervisor | undefined | Promise<Hypervisor | undefined>;
  cache?: ReplicationCacheProvider;
  backup?: BackupSink;
  ruleSets?: readonly RuleSet[];
  checkpointEveryMs: number;
  /** How long a stopped run may take to reach a checkpoint before its work is aborted (see `EngineOptions.stopGraceMs`). */
  stopGraceMs: number;
  readAhead: number;
  /** Read buffers kept between disks and runs. */
  buffers: BufferShelf;
  /** Where the store journals runs, named in the owner record the run puts on its replica. */
  stateDir?: string;
  /** The run's lease on its replica, when the store has leases: checked before the commit. */
  lease?: ReplicaLease;
  /** The options of every journal write (the lease's fence). */
  saveOptions?: SaveRunOptions;
  /**
   * The lease's epoch as the fence of the run's target operations (claim, commit, revert): a
   * fencing target refuses them once a newer lease holder has claimed the replica.
   */
  fence?: TargetFence;
}
