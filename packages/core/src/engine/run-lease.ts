import type { TargetFence } from '../contracts/hypervisor.js';
import type { ReplicaLease, SaveRunOptions } from './replica-lease.js';
import type { StateStore } from './state-store.js';

/** A run's lease on its replica while the run executes, renewed in the background. */
export interface HeldLease {
  /** The lease. */
  readonly lease: ReplicaLease;
  /** The `saveRun` options that fence a journal write with the lease. */
  readonly saveOptions: SaveRunOptions;
  /** The fence of the run's target operations: the lease's epoch. */
  readonly fence: TargetFence;
  /** Stops the renewals and releases the lease. */
  end(): Promise<void>;
}

/**
 * Takes the lease on job `replica`'s replica when `store` has leases (`leaseReplica`), and renews
 * it every third of its TTL; a renewal that fails calls `lost` once (the run must stop writing).
 * Resolves to `undefined` for a store without leases (the file store): the run goes on as before.
 */
export async function holdRunLease(
  store: StateStore,
  replica: string,
  ttlMs: number,
  lost: (error: unknown) => void,
): Promise<HeldLease | undefined> {
  if (!store.leaseReplica) return undefined;
  const lease = await store.leaseReplica(replica, { ttlMs });
  let failed = false;
  let renewing: Promise<void> = Promise.resolve();
  const timer = setInterval(
    () => {
      if (failed) return;
      renewing = lease.heartbeat().catch((error: unknown) => {
        failed = true;
        lost(error);
      });
    },
    Math.max(1, Math.floor(ttlMs / 3)),
  );
  timer.unref();
  return {
    lease,
    saveOptions: { fence: { replica: lease.replica, epoch: lease.epoch } },
    fence: { epoch: lease.epoch },
    async end() {
      clearInterval(timer);
      await renewing;
      await lease.release();
    },
  };
}
