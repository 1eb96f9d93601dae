import { isIPv4 } from 'node:net';
import type { SimState } from '../sim-state.js';
import { fault } from '../xapi-fault.js';

/** `other_config` key that makes a VM a delegate appliance (the template has `template`). */
export const ABD_MARKER = 'replikit:abd';

/**
 * The `xenstore_data` keys an appliance reads, as a driver sets them. The network identity uses
 * the `vm-data/ip|netmask|gateway` keys appliances commonly read from XenStore (Xen Orchestra's
 * appliance among them); the rest are replikit's own, under `vm-data/replikit/`.
 */
export const ABD_KEYS = {
  ip: 'vm-data/ip',
  netmask: 'vm-data/netmask',
  gateway: 'vm-data/gateway',
  port: 'vm-data/replikit/port',
  pskIdentity: 'vm-data/replikit/psk-identity',
  psk: 'vm-data/replikit/psk',
  srs: 'vm-data/replikit/srs',
} as const;

/** The agent's port when `vm-data/replikit/port` is not set (`replikit-agent`'s default). */
export const DEFAULT_ABD_PORT = 7400;

/** What an appliance is configured with, read from its records at `VM.start`. */
export interface ApplianceConfig {
  /** The appliance VM's uuid. */
  readonly uuid: string;
  /** The appliance VM's name. */
  readonly name: string;
  /** Its address on the network of its VIF `0`: a loopback address 127.x.y.z. */
  readonly ip: string;
  /** Its netmask. */
  readonly netmask: string;
  /** Its gateway, when set (on the same subnet). */
  readonly gateway: string | undefined;
  /** The network its VIF `0` is on. */
  readonly network: string;
  /** The agent's TCP port. */
  readonly port: number;
  /** The TLS-PSK identity the agent accepts. */
  readonly pskIdentity: string;
  /** The pre-shared key, hex; never put in a message or a log. */
  readonly pskHex: string;
  /** The SRs it sees (refs); every SR of the pool when `vm-data/replikit/srs` is not set. */
  readonly srs: readonly string[];
}

/** True when the VM is a delegate appliance (made from the appliance template, or imported as one). */
export function isAppliance(sim: SimState, vm: string): boolean {
  return sim.db.field<Record<string, string>>('VM', vm, 'other_config')[ABD_MARKER] !== undefined;
}

function ipv4Number(ip: string): number {
  return ip.split('.').reduce((n, part) => n * 256 + Number(part), 0);
}

/** A failure of `VM.start` of an appliance whose configuration is wrong: `INTERNAL_ERROR [why]`. */
export function applianceFault(name: string, uuid: string, why: string) {
  return fault('INTERNAL_ERROR', `xapi-sim: appliance '${name}' (${uuid}) ${why}`);
}

/**
 * Reads an appliance's configuration from its `xenstore_data` (see {@link ABD_KEYS}) and its VIF
 * `0`; a missing or wrong value fails with `INTERNAL_ERROR` naming the key.
 */
export function applianceConfig(sim: SimState, vm: string): ApplianceConfig {
  const rec = sim.db.get('VM', vm);
  const uuid = rec.uuid as string;
  const name = rec.name_label as string;
  const data = rec.xenstore_data as Record<string, string>;
  const fail = (why: string) => applianceFault(name, uuid, why);
  const vif = (rec.VIFs as string[]).find((v) => sim.db.field<string>('VIF', v, 'device') === '0');
  if (vif === undefined) throw fail('has no VIF 0: create one on the network it serves (VIF.create)');
  const ip = data[ABD_KEYS.ip];
  if (ip === undefined || !isIPv4(ip) || !ip.startsWith('127.')) {
    throw fail(`needs xenstore_data ${ABD_KEYS.ip}: a loopback address 127.x.y.z here, got '${ip ?? ''}'`);
  }
  const netmask = data[ABD_KEYS.netmask] ?? '255.0.0.0';
  const mask = isIPv4(netmask) ? ipv4Number(netmask) : -1;
  if (mask < 0 || !/^1*0*$/.test(mask.toString(2).padStart(32, '0'))) {
    throw fail(`has xenstore_data ${ABD_KEYS.netmask} '${netmask}', not a netmask such as 255.0.0.0`);
  }
  const gateway = data[ABD_KEYS.gateway];
  if (gateway !== undefined && (!isIPv4(gateway) || (ipv4Number(gateway) & mask) !== (ipv4Number(ip) & mask))) {
    throw fail(`has xenstore_data ${ABD_KEYS.gateway} '${gateway}', not an address on ${ip}/${netmask}`);
  }
  const portText = data[ABD_KEYS.port] ?? String(DEFAULT_ABD_PORT);
  const port = /^\d{1,5}$/.test(portText) ? Number(portText) : 0;
  if (port < 1 || port > 65535) throw fail(`has xenstore_data ${ABD_KEYS.port} '${portText}', not a port 1-65535`);
  const pskHex = data[ABD_KEYS.psk];
  // The key itself is never quoted in a message.
  if (pskHex === undefined || !/^([0-9a-fA-F]{2}){16,}$/.test(pskHex)) {
    throw fail(`needs xenstore_data ${ABD_KEYS.psk}: a pre-shared key of at least 16 bytes in hex`);
  }
  const srList = data[ABD_KEYS.srs];
  let srs: string[];
  if (srList === undefined) {
    srs = sim.db.refs('SR');
  } else {
    srs = [];
    for (const srUuid of srList
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean)) {
      const sr = sim.db.refs('SR').find((r) => sim.db.field<string>('SR', r, 'uuid') === srUuid);
      if (sr === undefined) throw fail(`has xenstore_data ${ABD_KEYS.srs} naming SR ${srUuid}, which does not exist`);
      srs.push(sr);
    }
  }
  return {
    uuid,
    name,
    ip,
    netmask,
    gateway,
    network: sim.db.field<string>('VIF', vif, 'network'),
    port,
    pskIdentity: data[ABD_KEYS.pskIdentity] ?? 'replikit',
    pskHex,
    srs,
  };
}
