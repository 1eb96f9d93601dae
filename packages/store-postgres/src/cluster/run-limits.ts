import { InputError, type JobSpec } from '@replikit/core';

/** What a run limit counts runs against: the job's source host, or its target. */
export type LimitScope = 'host' | 'target';

/**
 * Limits on the runs at once across every worker of a cluster. Each counts the runs that hold a
 * slot of one key: a run takes a slot of its source host's key and one of its target's key
 * before it starts (or resumes), and holds them until it ends. A run that finds no free slot
 * waits on its worker for one (it is not sent back to the queue).
 */
export interface RunLimits {
  /**
   * Runs at once that read from one source host (the job's `source`: its driver and its `url`,
   * `host` or `root`). Unset: no limit.
   */
  perHost?: number;
  /**
   * Runs at once that write to one target (the job's `target`: its driver and its `url`, `host`
   * or `root`). Unset: no limit.
   */
  perTarget?: number;
  /**
   * How often a waiting run tries the slots again, in milliseconds (a slot released by a worker
   * also wakes the waiting runs at once, through `NOTIFY`).
   * @default 500
   */
  pollMs?: number;
  /**
   * The key a job's runs count against in `scope`, when the default (the endpoint's driver and
   * its `url`, `host` or `root`) is not what should share a limit (two URLs of one pool, say).
   */
  keyOf?: (job: JobSpec, scope: LimitScope) => string;
}

/** One limit a run must get a slot of: `limit` slots of `key` in `scope`. */
export interface LimitWant {
  /** `host` or `target`. */
  scope: LimitScope;
  /** Which host or target. */
  key: string;
  /** How many runs of that key may hold a slot at once. */
  limit: number;
}

/**
 * The default key of one side of a job: its driver and the first of its `url`, `host` and `root`
 * that is a string (`file:/srv/vms`, `xen:https://pool1`); the driver alone when it has none of
 * them (`hyperv` for a job on the local Hyper-V host).
 */
export function endpointKey(endpoint: JobSpec['source'] | JobSpec['target']): string {
  const fields = endpoint as Record<string, unknown>;
  for (const name of ['url', 'host', 'root']) {
    const value = fields[name];
    if (typeof value === 'string') return `${endpoint.driver}:${value}`;
  }
  return endpoint.driver;
}

/** Checks `limits` (each limit a whole number ≥ 1); throws `E_INPUT` naming the bad one. */
export function checkRunLimits(limits: RunLimits): void {
  for (const name of ['perHost', 'perTarget'] as const) {
    const value = limits[name];
    if (value !== undefined && (!Number.isInteger(value) || value < 1)) {
      throw new InputError(`limits.${name} must be a whole number of runs ≥ 1, got ${value}`);
    }
  }
  if (limits.pollMs !== undefined && (!Number.isFinite(limits.pollMs) || limits.pollMs < 10)) {
    throw new InputError(`limits.pollMs must be at least 10 ms, got ${limits.pollMs}`);
  }
}

/** The slots a run of `job` must hold under `limits` (none when no limit is set). */
export function limitWantsOf(job: JobSpec, limits: RunLimits | undefined): LimitWant[] {
  if (!limits) return [];
  const wants: LimitWant[] = [];
  const keyOf =
    limits.keyOf ?? ((j: JobSpec, scope: LimitScope) => endpointKey(scope === 'host' ? j.source : j.target));
  if (limits.perHost !== undefined) wants.push({ scope: 'host', key: keyOf(job, 'host'), limit: limits.perHost });
  if (limits.perTarget !== undefined)
    wants.push({ scope: 'target', key: keyOf(job, 'target'), limit: limits.perTarget });
  return wants;
}
