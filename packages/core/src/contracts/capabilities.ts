/**
 * What a driver kind can do. Core keeps a table of the known kinds so that a job can be judged
 * offline, before any driver package is loaded; a driver's own capabilities must agree with it.
 */
export interface Capabilities {
  /** Replication methods the driver implements (`xva`, `abd`, `qhybrid`, `cbt` or its own). */
  methods: readonly string[];
  /** Whether the driver can be the source of a replication. */
  canBeSource: boolean;
  /** Whether the driver can be the target of a replication. */
  canBeTarget: boolean;
  /** Whether the driver offers a {@link ChangeTracker} (changed extents between snapshots). */
  changeTracking: boolean;
  /** Disk image formats the driver reads or writes natively (`raw`, `vhd`, `vhdx`, …). */
  formats: readonly string[];
  /** Whether replicas keep restore points (so that a failed run can be rolled back). */
  restorePoints: boolean;
  /**
   * Whether the driver implements the failover hooks (`FailoverHooks`: clones of restore
   * points, promotion, undo, commit, retirement) for its replicas.
   * @default false
   */
  failover?: boolean;
  /**
   * Whether the target fences its replicas: it keeps the highest lease epoch each replica has
   * seen and refuses a claim, commit or revert carrying a lower one (`TargetFence`), atomically
   * with it. Without it, a run under a lease checks the lease just before it commits, which
   * leaves a window in which a worker paused past its lease may still commit.
   * @default false
   */
  fencing?: boolean;
}
