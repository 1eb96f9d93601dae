import type { VMInfo } from '@replikit/core';

/** One adapter of a replica: its name, the source's MAC (12 hex digits) and the mapped switch. */
export interface NicPlanEntry {
  name: string;
  mac?: string | undefined;
  switchName?: string | undefined;
}

/** The adapters a replica gets, and the source networks no map entry names (left disconnected). */
export interface NicPlan {
  nics: NicPlanEntry[];
  unmapped: string[];
}

/**
 * The generation of a replica of `source`: a Hyper-V source's own; else from its firmware (`uefi`
 * → 2, `bios` → 1, as a Xen VM reports it); 2 when nothing says.
 */
export function replicaGeneration(source: VMInfo): 1 | 2 {
  const extra = source as VMInfo & { generation?: unknown; firmware?: unknown };
  if (extra.generation === 1 || extra.generation === 2) return extra.generation;
  if (extra.firmware === 'bios') return 1;
  return 2;
}

/** The Secure Boot settings `Set-VMFirmware` gives a generation 2 replica. */
export interface ReplicaFirmware {
  /** `On` or `Off` (`-EnableSecureBoot`). */
  secureBoot: 'On' | 'Off';
  /** `-SecureBootTemplate`. */
  template: string;
}

/** Hyper-V's template for a new generation 2 VM: trusts Windows' boot loader only. */
export const DEFAULT_SECURE_BOOT_TEMPLATE = 'MicrosoftWindows';

/**
 * Secure Boot of the replica of `source`, or `undefined` to leave Hyper-V's default (on, with the
 * Windows template): for a generation 2 replica whose source says whether Secure Boot is on. The
 * template is the source's own (a Hyper-V source), else `template` (a Xen source names none:
 * XenServer's Secure Boot trusts both Microsoft's Windows and third-party UEFI CAs, and no single
 * Hyper-V template does, so the job chooses; Windows by default, as Hyper-V does).
 */
export function replicaFirmware(source: VMInfo, template?: string): ReplicaFirmware | undefined {
  if (replicaGeneration(source) !== 2 || source.secureBoot === undefined) return undefined;
  const own = (source as VMInfo & { secureBootTemplate?: unknown }).secureBootTemplate;
  return {
    secureBoot: source.secureBoot ? 'On' : 'Off',
    template: typeof own === 'string' && own !== '' ? own : (template ?? DEFAULT_SECURE_BOOT_TEMPLATE),
  };
}

/** A MAC as Hyper-V takes it (12 upper-case hex digits), or undefined when `mac` is none. */
export function hyperVMac(mac: unknown): string | undefined {
  if (typeof mac !== 'string') return undefined;
  const bare = mac.replace(/[-:.]/g, '').toUpperCase();
  return /^[0-9A-F]{12}$/.test(bare) ? bare : undefined;
}

/**
 * The replica's adapters: one per source adapter (a Hyper-V source's `nics`, else one per entry of
 * `networks` with the MAC of `macs` at the same place), with the source's MAC, connected to the
 * switch `networkMap` names for the source network, or disconnected (and reported) when none does.
 */
export function planNics(source: VMInfo, networkMap: Record<string, string>): NicPlan {
  const extra = source as VMInfo & {
    nics?: Array<{ name?: unknown; macAddress?: unknown; switchName?: unknown }>;
    macs?: unknown[];
  };
  const sources = Array.isArray(extra.nics)
    ? extra.nics.map((n) => ({ network: typeof n.switchName === 'string' ? n.switchName : '', mac: n.macAddress }))
    : (source.networks ?? []).map((network, i) => ({ network, mac: extra.macs?.[i] }));
  const nics: NicPlanEntry[] = [];
  const unmapped: string[] = [];
  for (const [i, s] of sources.entries()) {
    const switchName = s.network === '' ? undefined : networkMap[s.network];
    if (switchName === undefined && s.network !== '') unmapped.push(s.network);
    nics.push({ name: `Network Adapter ${i + 1}`, mac: hyperVMac(s.mac), switchName });
  }
  return { nics, unmapped };
}
