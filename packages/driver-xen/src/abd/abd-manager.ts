import { hostname } from 'node:os';
import { DriverError, isReplikitError } from '@replikit/core';
import { createRemoteTarget, type RemoteTargetDriver } from '@replikit/transport';
import { backoffDelay, sleep } from '../xapi/backoff.js';
import type { XenConnection } from '../xapi/xen-connection.js';
import { type ApplianceAccess, findOrDeployAppliance, stopAppliance, waitUntilAnswers } from './abd-appliance.js';
import { ABD_AGENT_KIND, ABD_APPLIANCE, ABD_HOLDER_MARK, ABD_MARK, ABD_VBD_MARK } from './abd-keys.js';
import {
  type AbdSettings,
  type AbdTiming,
  DEFAULT_ABD_READY_TIMEOUT_MS,
  DEFAULT_ABD_UNPLUG_ATTEMPTS,
} from './abd-settings.js';

/** A VDI plugged into an appliance by an {@link AbdLease}. */
export interface PluggedVdi {
  /** The VBD's ref. */
  readonly vbd: string;
  /** The VDI's ref. */
  readonly vdi: string;
  /** The VDI's uuid: the disk id the appliance's agent knows it by. */
  readonly uuid: string;
  /** `RO` (a source snapshot VDI) or `RW` (a replica VDI). */
  readonly mode: 'RO' | 'RW';
}

/** One pool's appliance as this process holds it: shared by the leases that acquired it. */
interface Shared {
  access: Promise<ApplianceAccess>;
  users: number;
  persistent: boolean;
}

/** Appliances held by this process, by pool (the pool master's URL origin). */
const held = new Map<string, Shared>();

/**
 * The plug in progress per appliance: picking a free device and creating its VBD must not
 * interleave (two disks, or a source and a target in one pool, would pick the same device).
 */
const plugging = new Map<string, Promise<unknown>>();

/** Codes of a `VBD.unplug` that may succeed a moment later. */
const UNPLUG_RETRY = new Set(['VDI_IN_USE', 'DEVICE_DETACH_REJECTED']);

/**
 * The delegate appliance (ABD) of a pool, for one user (a source or a target driver): acquire it
 * with {@link AbdLease.acquire}, plug the VDIs the run reads or writes, talk to its agent through
 * {@link AbdLease.target}, and {@link AbdLease.release} it in a `finally`. Source and target in
 * one pool share one appliance: the last release stops it, unless the job keeps it (`persistent`).
 * Release always unplugs and destroys every VBD the lease plugged, even after a failure.
 */
export class AbdLease {
  private readonly plugged = new Map<string, PluggedVdi>();
  private remote: RemoteTargetDriver | undefined;
  private released = false;

  private constructor(
    private readonly connection: XenConnection,
    private readonly key: string,
    /** Where the appliance's agent listens, its VM and its key. */
    readonly appliance: ApplianceAccess,
    private readonly timing: Required<AbdTiming>,
  ) {}

  /**
   * Finds the pool's appliance (one this process holds already, a running one, a halted one) or
   * deploys one, starts it with a fresh key, and waits until its agent answers over TLS-PSK.
   * When that fails, an appliance this call started is stopped again.
   *
   * @throws `E_DRIVER` when the pool has no appliance image, every address of `abd.ips` is taken,
   * or the agent does not answer in time.
   */
  static async acquire(
    connection: XenConnection,
    settings: AbdSettings,
    options: AbdTiming & { signal?: AbortSignal } = {},
  ): Promise<AbdLease> {
    const timing = {
      readyTimeoutMs: options.readyTimeoutMs ?? DEFAULT_ABD_READY_TIMEOUT_MS,
      unplugAttempts: options.unplugAttempts ?? DEFAULT_ABD_UNPLUG_ATTEMPTS,
    };
    const key = connection.url.origin;
    let shared = held.get(key);
    if (!shared) {
      const access = start(connection, settings, timing, options.signal);
      shared = { access, users: 0, persistent: settings.persistent === true };
      held.set(key, shared);
      access.catch(() => {
        if (held.get(key) === shared) held.delete(key);
      });
    }
    shared.users++;
    shared.persistent ||= settings.persistent === true;
    try {
      return new AbdLease(connection, key, await shared.access, timing);
    } catch (error) {
      shared.users--;
      throw error;
    }
  }

  /** The VDIs this lease has plugged now. */
  get pluggedVdis(): PluggedVdi[] {
    return [...this.plugged.values()];
  }

  /**
   * Plugs a VDI into the appliance: `RO` for a source snapshot VDI, `RW` for a replica VDI. A VBD
   * whose plug fails is destroyed again.
   */
  plug(vdi: string, mode: 'RO' | 'RW', signal?: AbortSignal): Promise<PluggedVdi> {
    const key = this.appliance.ref;
    const run = (plugging.get(key) ?? Promise.resolve()).then(() => this.plugNow(vdi, mode, signal));
    const settled = run.catch(() => undefined);
    plugging.set(key, settled);
    void settled.then(() => {
      if (plugging.get(key) === settled) plugging.delete(key);
    });
    return run;
  }

  private async plugNow(vdi: string, mode: 'RO' | 'RW', signal?: AbortSignal): Promise<PluggedVdi> {
    if (this.released) throw new DriverError(`the appliance lease of ${this.appliance.name} was released`);
    const opts = { signal };
    const devices = await this.connection.call<string[]>('VM.get_allowed_VBD_devices', [this.appliance.ref], opts);
    if (devices.length === 0) {
      throw new DriverError(`appliance '${this.appliance.name}' has no free device for another VDI`);
    }
    const vbd = await this.connection.callAsync<string>(
      'VBD.create',
      [
        {
          VM: this.appliance.ref,
          VDI: vdi,
          userdevice: devices[0],
          bootable: false,
          mode,
          type: 'Disk',
          empty: false,
          unpluggable: true,
          other_config: { [ABD_VBD_MARK]: ownerMark() },
          qos_algorithm_type: '',
          qos_algorithm_params: {},
        },
      ],
      opts,
    );
    try {
      await this.connection.callAsync('VBD.plug', [vbd], opts);
    } catch (error) {
      await this.connection.callAsync('VBD.destroy', [vbd]).catch(() => undefined);
      throw error;
    }
    const uuid = await this.connection.call<string>('VDI.get_uuid', [vdi]);
    const plugged = { vbd, vdi, uuid, mode };
    this.plugged.set(vbd, plugged);
    return plugged;
  }

  /**
   * Unplugs a VDI and destroys its VBD. `VBD.unplug` refused with `VDI_IN_USE` or
   * `DEVICE_DETACH_REJECTED` is tried again with backoff; not cancellable, as it cleans up.
   */
  async unplug(plugged: PluggedVdi): Promise<void> {
    if (await unplugWithRetry(this.connection, plugged.vbd, this.timing.unplugAttempts)) {
      await this.connection.callAsync('VBD.destroy', [plugged.vbd]);
    }
    this.plugged.delete(plugged.vbd);
  }

  /**
   * The appliance's agent as a target driver (kind `xen-abd`): `getVM(uuid)` lists the plugged
   * VDIs, `ensureReplica` with `placement.vdis` names the replica's VDIs, and its `transport`
   * writes them. Closed by {@link AbdLease.release}.
   */
  target(): RemoteTargetDriver {
    if (this.released) throw new DriverError(`the appliance lease of ${this.appliance.name} was released`);
    this.remote ??= agentOf(this.appliance);
    return this.remote;
  }

  /**
   * Unplugs and destroys every VBD this lease plugged, closes the link to the agent, and, when no
   * other lease holds the appliance and the job does not keep it, stops it. Every step runs even
   * when one before failed; the first failure is thrown at the end. Calling it twice is harmless.
   */
  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    const failures: unknown[] = [];
    await this.remote?.close().catch((error: unknown) => failures.push(error));
    for (const plugged of [...this.plugged.values()].reverse()) {
      await this.unplug(plugged).catch((error: unknown) => failures.push(error));
    }
    const shared = held.get(this.key);
    if (shared) {
      shared.users--;
      if (shared.users === 0) {
        held.delete(this.key);
        if (!shared.persistent) {
          await stopAppliance(this.connection, this.appliance.ref).catch((error: unknown) => failures.push(error));
        } else {
          // Kept on purpose: no later driver may take it for one a killed run left behind.
          await this.connection
            .call('VM.remove_from_other_config', [this.appliance.ref, ABD_HOLDER_MARK])
            .catch((error: unknown) => failures.push(error));
        }
      }
    }
    if (failures.length > 0) throw failures[0];
  }
}

/** The {@link ABD_VBD_MARK} of this process's VBDs: `<host>/<pid>`, so a later run can tell a dead owner's. */
function ownerMark(): string {
  return `${hostname()}/${process.pid}`;
}

/**
 * Stops the pool's running appliances whose last holder ({@link ABD_HOLDER_MARK}) was a process
 * of this host that is dead, once the VBDs it left are unplugged, unless a VBD of another process
 * is still plugged. For a driver that closes without having used the appliance (a resumed run
 * that only commits): the killed run it resumes left the appliance running. Nothing when this
 * process holds an appliance of the pool.
 */
export async function stopAbandonedAppliances(
  connection: XenConnection,
  unplugAttempts = DEFAULT_ABD_UNPLUG_ATTEMPTS,
): Promise<void> {
  if (held.has(connection.url.origin)) return;
  type VmRecord = { other_config?: Record<string, string>; power_state: string; is_a_template: boolean };
  const all = await connection.call<Record<string, VmRecord>>('VM.get_all_records', []);
  for (const [ref, vm] of Object.entries(all)) {
    if (vm.is_a_template || vm.power_state !== 'Running' || vm.other_config?.[ABD_MARK] !== ABD_APPLIANCE) continue;
    const holder = vm.other_config[ABD_HOLDER_MARK];
    if (holder === undefined || !deadProcessHere(holder)) continue;
    await sweepDeadOwners(connection, ref, unplugAttempts);
    let inUse = false;
    for (const vbd of await connection.call<string[]>('VM.get_VBDs', [ref])) {
      const record = await connection.call<{ other_config?: Record<string, string>; currently_attached: boolean }>(
        'VBD.get_record',
        [vbd],
      );
      if (record.currently_attached && record.other_config?.[ABD_VBD_MARK] !== undefined) inUse = true;
    }
    if (!inUse) await stopAppliance(connection, ref);
  }
}

/**
 * Unplugs and destroys, on every running appliance of the pool, the VBDs that dead processes of
 * this host left plugged (see `sweepDeadOwners`). A driver with an `abd` section does it as it
 * opens: the run it resumes may destroy or write those VDIs before it uses the appliance.
 */
export async function unplugDeadOwners(
  connection: XenConnection,
  unplugAttempts = DEFAULT_ABD_UNPLUG_ATTEMPTS,
): Promise<void> {
  type VmRecord = { other_config?: Record<string, string>; power_state: string; is_a_template: boolean };
  const all = await connection.call<Record<string, VmRecord>>('VM.get_all_records', []);
  for (const [ref, vm] of Object.entries(all)) {
    if (vm.is_a_template || vm.power_state !== 'Running' || vm.other_config?.[ABD_MARK] !== ABD_APPLIANCE) continue;
    await sweepDeadOwners(connection, ref, unplugAttempts);
  }
}

/** True for a `<host>/<pid>` mark naming this host and a pid that no longer runs. */
function deadProcessHere(mark: string): boolean {
  const here = `${hostname()}/`;
  if (!mark.startsWith(here)) return false;
  const pid = Number(mark.slice(here.length));
  return Number.isSafeInteger(pid) && pid > 0 && !alive(pid);
}

/** True while process `pid` of this host exists. */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Unplugs and destroys the VBDs a process of this host plugged into the appliance and left behind
 * when it died (killed mid-run): their mark names this host and a pid that no longer runs. VBDs of
 * live processes and of other hosts are left alone (another run may be using the appliance).
 */
async function sweepDeadOwners(connection: XenConnection, appliance: string, attempts: number): Promise<void> {
  const here = `${hostname()}/`;
  for (const vbd of await connection.call<string[]>('VM.get_VBDs', [appliance])) {
    const record = await connection.call<{ other_config: Record<string, string>; currently_attached: boolean }>(
      'VBD.get_record',
      [vbd],
    );
    const mark = record.other_config?.[ABD_VBD_MARK];
    if (mark === undefined || !mark.startsWith(here)) continue;
    const pid = Number(mark.slice(here.length));
    if (!Number.isSafeInteger(pid) || pid <= 0 || alive(pid)) continue;
    if (record.currently_attached) await unplugWithRetry(connection, vbd, attempts);
    await connection.callAsync('VBD.destroy', [vbd]).catch((error: unknown) => {
      if (!isReplikitError(error, 'E_NOT_FOUND')) throw error;
    });
  }
}

/**
 * `VBD.unplug`, tried again with backoff on `VDI_IN_USE` or `DEVICE_DETACH_REJECTED`; false when
 * the VBD no longer exists.
 */
async function unplugWithRetry(connection: XenConnection, vbd: string, attempts: number): Promise<boolean> {
  for (let attempt = 0; ; attempt++) {
    try {
      await connection.callAsync('VBD.unplug', [vbd], { retryInUse: false });
      return true;
    } catch (error) {
      const code = detailsCode(error);
      if (code === 'DEVICE_ALREADY_DETACHED') return true;
      if (code === 'HANDLE_INVALID' || isReplikitError(error, 'E_NOT_FOUND')) return false;
      if (code === undefined || !UNPLUG_RETRY.has(code) || attempt + 1 >= attempts) throw error;
      await sleep(backoffDelay({ attempts: 0, baseDelayMs: 200, maxDelayMs: 5000 }, attempt));
    }
  }
}

/** The XAPI code a wrapped error carries in its details. */
function detailsCode(error: unknown): string | undefined {
  if (!isReplikitError(error)) return undefined;
  const code = error.details.xapiCode;
  return typeof code === 'string' ? code : undefined;
}

/** A target driver talking to an appliance's agent over TLS-PSK. */
function agentOf(appliance: ApplianceAccess): RemoteTargetDriver {
  return createRemoteTarget({
    kind: ABD_AGENT_KIND,
    address: appliance.address,
    security: { kind: 'tls', psk: { identity: appliance.psk.identity, key: appliance.psk.key } },
  });
}

/** Finds or deploys the appliance, starts it, and waits for its agent; stops what it started on failure. */
async function start(
  connection: XenConnection,
  settings: AbdSettings,
  timing: Required<AbdTiming>,
  signal?: AbortSignal,
): Promise<ApplianceAccess> {
  const access = await findOrDeployAppliance(connection, settings, signal);
  // This process holds it from now on (a later driver must not take it for an abandoned one).
  await connection.call('VM.remove_from_other_config', [access.ref, ABD_HOLDER_MARK], { signal });
  await connection.call('VM.add_to_other_config', [access.ref, ABD_HOLDER_MARK, ownerMark()], { signal });
  const readyTimeoutMs = timing.readyTimeoutMs;
  const probe = agentOf(access);
  try {
    await waitUntilAnswers(
      async () => void (await probe.getVM(access.uuid, { signal })),
      readyTimeoutMs,
      `the agent of appliance '${access.name}' at ${access.address.host}:${access.address.port}`,
      signal,
    );
  } catch (error) {
    if (access.startedHere) await stopAppliance(connection, access.ref).catch(() => undefined);
    throw error;
  } finally {
    await probe.close();
  }
  await sweepDeadOwners(connection, access.ref, timing.unplugAttempts);
  return access;
}
