/** What the ABD lifecycle needs from a job's `abd` section (see `xen-options.ts`), resolved. */
export interface AbdSettings {
  /** Addresses an appliance may take, one per appliance, tried in order. */
  readonly ips: readonly string[];
  /** Uuids of the SRs the appliance must see; empty: every SR of the pool. */
  readonly srs: readonly string[];
  /** Uuid of the SR that receives a deployed appliance's own disks; unset: the template's SRs (a clone). */
  readonly imageSr?: string | undefined;
  /** The appliance's netmask. @default "255.255.255.0" */
  readonly netmask?: string | undefined;
  /** The appliance's gateway (on its subnet). @default none */
  readonly gateway?: string | undefined;
  /** Keep the appliance running after the run, for the next one. @default false */
  readonly persistent?: boolean | undefined;
}

/** Timing of the lifecycle: how long an appliance's agent may take to answer after `VM.start`. */
export interface AbdTiming {
  /**
   * Milliseconds from `VM.start` until the agent must answer (a real appliance boots first).
   * @default 180000 (3 minutes)
   */
  readonly readyTimeoutMs?: number;
  /**
   * Attempts of `VBD.unplug` refused with `VDI_IN_USE` or `DEVICE_DETACH_REJECTED` (tapdisk still
   * busy, the guest holding the device), with a doubling delay from 200 ms to 5 s.
   * @default 8
   */
  readonly unplugAttempts?: number;
}

/** The appliance's netmask when the job gives none. */
export const DEFAULT_ABD_NETMASK = '255.255.255.0';

/** {@link AbdTiming.readyTimeoutMs}'s default. */
export const DEFAULT_ABD_READY_TIMEOUT_MS = 180_000;

/** {@link AbdTiming.unplugAttempts}'s default. */
export const DEFAULT_ABD_UNPLUG_ATTEMPTS = 8;
