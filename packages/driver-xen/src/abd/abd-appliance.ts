import { randomBytes } from 'node:crypto';
import { DriverError, isReplikitError } from '@replikit/core';
import { sleep } from '../xapi/backoff.js';
import type { XenConnection } from '../xapi/xen-connection.js';
import { ABD_APPLIANCE, ABD_MARK, ABD_PORT, ABD_PSK_IDENTITY, ABD_TEMPLATE, ABD_XENSTORE } from './abd-keys.js';
import { type AbdSettings, DEFAULT_ABD_NETMASK } from './abd-settings.js';

/** Where an appliance's agent listens and how to authenticate to it (the key lives in memory only). */
export interface ApplianceAccess {
  /** The appliance VM's ref. */
  readonly ref: string;
  /** The appliance VM's uuid (the one VM its agent lists). */
  readonly uuid: string;
  /** Its name, for messages. */
  readonly name: string;
  /** The agent's address. */
  readonly address: { readonly host: string; readonly port: number };
  /** The TLS-PSK identity and key of its agent. */
  readonly psk: { readonly identity: string; readonly key: Uint8Array };
  /** True when this process started it (false: it was running already, a persistent appliance). */
  readonly startedHere: boolean;
}

interface VmRecord {
  uuid: string;
  name_label: string;
  is_a_template: boolean;
  is_a_snapshot: boolean;
  power_state: string;
  other_config: Record<string, string>;
  xenstore_data: Record<string, string>;
  VIFs: string[];
}

type Call = <T>(method: string, ...args: unknown[]) => Promise<T>;

/** The appliances and the appliance image of a pool, found by their `other_config` mark. */
async function markedVMs(call: Call): Promise<Array<[string, VmRecord]>> {
  const all = await call<Record<string, VmRecord>>('VM.get_all_records');
  return Object.entries(all).filter(([, vm]) => vm.other_config?.[ABD_MARK] !== undefined && !vm.is_a_snapshot);
}

/**
 * Finds the pool's appliance (a running one first, then a halted one), or deploys one from the
 * appliance image, then starts it with a fresh key when it is not running. A running appliance
 * is reused with the key its `xenstore_data` holds (it was started by an earlier run: a persistent
 * appliance). Nothing is started when a step before `VM.start` fails.
 */
export async function findOrDeployAppliance(
  connection: XenConnection,
  settings: AbdSettings,
  signal?: AbortSignal,
): Promise<ApplianceAccess> {
  const call: Call = (method, ...args) => connection.call(method, args, { signal });
  const callAsync: Call = (method, ...args) => connection.callAsync(method, args, { signal });
  const marked = await markedVMs(call);
  const appliances = marked.filter(([, vm]) => !vm.is_a_template && vm.other_config[ABD_MARK] === ABD_APPLIANCE);
  const running = appliances.find(([, vm]) => vm.power_state === 'Running' && reusableKey(vm) !== undefined);
  if (running) {
    const [ref, vm] = running;
    return {
      ref,
      uuid: vm.uuid,
      name: vm.name_label,
      address: { host: vm.xenstore_data[ABD_XENSTORE.ip]!, port: portOf(vm) },
      psk: { identity: vm.xenstore_data[ABD_XENSTORE.pskIdentity] ?? ABD_PSK_IDENTITY, key: reusableKey(vm)! },
      startedHere: false,
    };
  }
  const taken = new Set(
    marked
      .filter(([, vm]) => vm.power_state === 'Running')
      .map(([, vm]) => vm.xenstore_data?.[ABD_XENSTORE.ip])
      .filter((ip): ip is string => ip !== undefined),
  );
  const ip = settings.ips.find((candidate) => !taken.has(candidate));
  if (ip === undefined) {
    throw new DriverError(
      `every address of abd.ips (${settings.ips.join(', ')}) is taken by a running appliance on ${connection.url.host}; add one to abd.ips`,
    );
  }
  let ref = appliances.find(([, vm]) => vm.power_state === 'Halted')?.[0];
  if (ref === undefined) ref = await deploy(connection, settings, marked, signal);
  const key = randomBytes(32);
  const srUuids = settings.srs.length > 0 ? { [ABD_XENSTORE.srs]: settings.srs.join(',') } : {};
  await call('VM.set_xenstore_data', ref, {
    [ABD_XENSTORE.ip]: ip,
    [ABD_XENSTORE.netmask]: settings.netmask ?? DEFAULT_ABD_NETMASK,
    ...(settings.gateway ? { [ABD_XENSTORE.gateway]: settings.gateway } : {}),
    [ABD_XENSTORE.port]: String(ABD_PORT),
    [ABD_XENSTORE.pskIdentity]: ABD_PSK_IDENTITY,
    [ABD_XENSTORE.psk]: key.toString('hex'),
    ...srUuids,
  });
  await callAsync('VM.start', ref, false, false);
  const record = await call<VmRecord>('VM.get_record', ref);
  return {
    ref,
    uuid: record.uuid,
    name: record.name_label,
    address: { host: ip, port: ABD_PORT },
    psk: { identity: ABD_PSK_IDENTITY, key },
    startedHere: true,
  };
}

/** The key a running appliance was started with, when its `xenstore_data` holds a usable one. */
function reusableKey(vm: VmRecord): Uint8Array | undefined {
  const hex = vm.xenstore_data?.[ABD_XENSTORE.psk];
  const ip = vm.xenstore_data?.[ABD_XENSTORE.ip];
  if (hex === undefined || ip === undefined || !/^([0-9a-fA-F]{2}){16,}$/.test(hex)) return undefined;
  return Buffer.from(hex, 'hex');
}

function portOf(vm: VmRecord): number {
  const text = vm.xenstore_data[ABD_XENSTORE.port];
  return text !== undefined && /^\d{1,5}$/.test(text) ? Number(text) : ABD_PORT;
}

/** Makes an appliance from the pool's appliance image: a clone (or a copy onto `imageSr`), not a template, marked. */
async function deploy(
  connection: XenConnection,
  settings: AbdSettings,
  marked: Array<[string, VmRecord]>,
  signal?: AbortSignal,
): Promise<string> {
  const call: Call = (method, ...args) => connection.call(method, args, { signal });
  const callAsync: Call = (method, ...args) => connection.callAsync(method, args, { signal });
  const template = marked.find(([, vm]) => vm.is_a_template && vm.other_config[ABD_MARK] === ABD_TEMPLATE);
  if (!template) {
    throw new DriverError(
      `pool ${connection.url.host} has no delegate appliance image (a template with other_config ${ABD_MARK}=${ABD_TEMPLATE}); import the replikit appliance there`,
    );
  }
  const name = 'replikit delegate appliance';
  let ref: string;
  if (settings.imageSr === undefined) {
    ref = await callAsync<string>('VM.clone', template[0], name);
  } else {
    const sr = await call<string>('SR.get_by_uuid', settings.imageSr);
    ref = await callAsync<string>('VM.copy', template[0], name, sr);
  }
  await call('VM.set_is_a_template', ref, false);
  await call('VM.remove_from_other_config', ref, ABD_MARK);
  await call('VM.add_to_other_config', ref, ABD_MARK, ABD_APPLIANCE);
  if ((await call<string[]>('VM.get_VIFs', ref)).length === 0) {
    await connection.call('VM.destroy', [ref]).catch(() => undefined);
    throw new DriverError(
      `the delegate appliance image on ${connection.url.host} has no VIF 0: give the template a VIF on the network its appliances serve`,
    );
  }
  return ref;
}

/**
 * Stops an appliance: a clean shutdown, a hard one when the clean one fails. An appliance already
 * halted is left as it is.
 */
export async function stopAppliance(connection: XenConnection, ref: string): Promise<void> {
  const power = await connection.call<string>('VM.get_power_state', [ref]);
  if (power === 'Halted') return;
  try {
    await connection.callAsync('VM.clean_shutdown', [ref]);
  } catch (error) {
    if (isReplikitError(error, 'E_NOT_FOUND')) return;
    await connection.callAsync('VM.hard_shutdown', [ref]);
  }
}

/**
 * Calls `probe` until it succeeds or `timeoutMs` has passed, with a doubling delay from 100 ms
 * to 2 s: the appliance's agent answers once the appliance has booted.
 */
export async function waitUntilAnswers(
  probe: () => Promise<void>,
  timeoutMs: number,
  what: string,
  signal?: AbortSignal,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let delay = 100;
  for (;;) {
    try {
      await probe();
      return;
    } catch (error) {
      if (signal?.aborted || isReplikitError(error, 'E_AUTH') || Date.now() + delay > deadline) {
        throw new DriverError(
          `${what} did not answer within ${Math.round(timeoutMs / 1000)} s: ${(error as Error).message}`,
          { cause: error },
        );
      }
      await sleep(delay, signal);
      delay = Math.min(2000, delay * 2);
    }
  }
}
