/**
 * A worker's lease on one replica, from {@link StateStore.leaseReplica}: while it holds the lease,
 * no other worker may write the replica or its run journal. The `epoch` is a fencing token: it
 * grows every time any worker takes the replica's lease, and every journal write made under the
 * lease carries it ({@link SaveRunOptions.fence}), so the store refuses the writes of a worker that
 * was paused past the lease's TTL and has been replaced (`E_LEASE_LOST`).
 */
export interface ReplicaLease {
  /** The replica the lease is on (the key every worker uses for it, e.g. the job's name). */
  readonly replica: string;
  /** The fencing token: greater than the epoch of every earlier lease on the replica. */
  readonly epoch: number;
  /** Who holds the lease (host, process and a random part unless the caller named it). */
  readonly owner: string;
  /** When the lease ends unless renewed, by the store's clock (ISO time). */
  readonly expiresAt: string;
  /**
   * Extends the lease by its TTL from now (by the store's clock) and updates {@link expiresAt}.
   * Rejects with `E_LEASE_LOST` when the lease has already expired or was taken over: the holder
   * must stop writing.
   */
  heartbeat(): Promise<void>;
  /** Ends the lease so another worker may take it at once; a lease already lost is a no-op. */
  release(): Promise<void>;
}

/** Options of {@link StateStore.leaseReplica}. */
export interface LeaseOptions {
  /** How long the lease lasts without a heartbeat, in milliseconds (a safe integer ≥ 1). */
  ttlMs: number;
  /**
   * Who takes the lease, as shown to other workers in conflicts and status.
   * @default `<host>:<pid>:<random>`
   */
  owner?: string;
}

/** Which lease a journal write is made under: the store refuses it unless that lease is current. */
export interface LeaseFence {
  /** The replica of the lease. */
  replica: string;
  /** The lease's epoch ({@link ReplicaLease.epoch}). */
  epoch: number;
}

/** Options of {@link StateStore.saveRun}. */
export interface SaveRunOptions {
  /**
   * The lease the write is made under. A store with leases ({@link StateStore.leaseReplica})
   * writes the record only if the lease is still current and unexpired, in the same statement as
   * the write, and rejects with `E_LEASE_LOST` otherwise. Ignored by a store without leases.
   */
  fence?: LeaseFence;
}
