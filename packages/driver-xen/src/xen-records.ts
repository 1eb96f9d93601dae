import type { DiskRef, VMInfo } from '@replikit/core';
import { REPLICA_DISK_KEY, REPLICA_NAME_KEY, REPLICA_SIZE_KEY } from './xen-replica-keys.js';

/** A XAPI record as `get_record` returns it (fields read defensively). */
export type XRecord = Record<string, unknown>;

/** `other_config` key marking a snapshot replikit took; its value is the snapshot's label. */
export const SNAPSHOT_LABEL_KEY = 'replikit:snapshot';
/** `other_config` key of a delegate appliance (ABD): never listed as a VM. */
export const ABD_KEY = 'replikit:abd';

const str = (v: unknown): string => (typeof v === 'string' ? v : '');
const map = (v: unknown): Record<string, string> => (v && typeof v === 'object' ? (v as Record<string, string>) : {});

/** The maps `get_all_records` of VM, VBD and VDI give, to build {@link VMInfo}s. */
export interface PoolView {
  vms: Record<string, XRecord>;
  vbds: Record<string, XRecord>;
  vdis: Record<string, XRecord>;
  /** VIF records, when the view was read for {@link toVMInfo} (its networks and MACs). */
  vifs?: Record<string, XRecord>;
  /** Network records, with {@link PoolView.vifs}. */
  networks?: Record<string, XRecord>;
}

/** A VM's VIFs in `device` order, each with its network's uuid and its MAC (lower case). */
export function vmNics(view: PoolView, vm: XRecord): Array<{ network: string; mac: string }> {
  const out: Array<{ device: number; network: string; mac: string }> = [];
  for (const ref of (vm.VIFs as string[] | undefined) ?? []) {
    const vif = view.vifs?.[ref];
    const network = vif ? view.networks?.[str(vif.network)] : undefined;
    if (!vif || !network) continue;
    out.push({ device: Number(vif.device) || 0, network: str(network.uuid), mac: str(vif.MAC).toLowerCase() });
  }
  return out.sort((a, b) => a.device - b.device).map(({ network, mac }) => ({ network, mac }));
}

/** The boot firmware of an HVM VM (`HVM_boot_params.firmware`; BIOS when unset). */
export function vmFirmware(vm: XRecord): 'bios' | 'uefi' {
  return map(vm.HVM_boot_params).firmware === 'uefi' ? 'uefi' : 'bios';
}

/**
 * Secure Boot of a UEFI VM, from `platform:secureboot`: `true` is on, `false` or unset is off;
 * `auto` (on where the pool holds Secure Boot certificates) cannot be told from the VM alone, so
 * it is reported as unknown, as is anything on a BIOS VM.
 */
export function vmSecureBoot(vm: XRecord): boolean | undefined {
  if (vmFirmware(vm) !== 'uefi') return undefined;
  const value = map(vm.platform).secureboot;
  if (value === 'true') return true;
  if (value === undefined || value === 'false') return false;
  return undefined;
}

/** True for a VM a user replicates: no template, snapshot, control domain or ABD appliance. */
export function isUserVM(vm: XRecord): boolean {
  return (
    vm.is_a_template !== true &&
    vm.is_a_snapshot !== true &&
    vm.is_control_domain !== true &&
    map(vm.other_config)[ABD_KEY] === undefined
  );
}

/** A VM's disk VBDs with their VDIs, in `userdevice` order. */
export function diskVbds(view: PoolView, vm: XRecord): Array<{ vbd: XRecord; vdiRef: string; vdi: XRecord }> {
  const out: Array<{ vbd: XRecord; vdiRef: string; vdi: XRecord }> = [];
  for (const ref of (vm.VBDs as string[] | undefined) ?? []) {
    const vbd = view.vbds[ref];
    if (vbd?.type !== 'Disk') continue;
    const vdiRef = str(vbd.VDI);
    const vdi = view.vdis[vdiRef];
    if (vdi) out.push({ vbd, vdiRef, vdi });
  }
  return out.sort((a, b) => Number(a.vbd.userdevice) - Number(b.vbd.userdevice));
}

const POWER: Record<string, VMInfo['powerState']> = {
  Running: 'running',
  Halted: 'stopped',
  Paused: 'paused',
  Suspended: 'paused',
};

/**
 * The size a disk presents: a replica VDI's source size (its `replikit:size` mark; the SR may
 * have rounded the VDI up), else the VDI's `virtual_size`.
 */
export function presentedSize(vdi: XRecord): number {
  const marked = Number(otherConfig(vdi)[REPLICA_SIZE_KEY]);
  const actual = Number(vdi.virtual_size);
  return Number.isSafeInteger(marked) && marked > 0 && marked <= actual ? marked : actual;
}

/**
 * The {@link VMInfo} of a VM record. Disk ids are VDI uuids, except on a replica VM, whose disks
 * carry the id and size of the source disk they mirror (as its `Replica` does).
 */
export function toVMInfo(view: PoolView, vm: XRecord): VMInfo {
  const id = str(vm.uuid);
  const replica = otherConfig(vm)[REPLICA_NAME_KEY] !== undefined;
  const disks: DiskRef[] = diskVbds(view, vm).map(({ vbd, vdi }) => {
    const mirrored = replica ? otherConfig(vdi)[REPLICA_DISK_KEY] : undefined;
    return {
      id: mirrored ?? str(vdi.uuid),
      vmId: id,
      size: mirrored !== undefined ? presentedSize(vdi) : Number(vdi.virtual_size),
      label: str(vdi.name_label),
      meta: { userdevice: str(vbd.userdevice) },
    };
  });
  return {
    id,
    name: str(vm.name_label),
    cpus: Number(vm.VCPUs_max) || 1,
    memoryMiB: Math.round(Number(vm.memory_static_max ?? 0) / 2 ** 20),
    powerState: POWER[str(vm.power_state)] ?? 'unknown',
    disks,
    ...nicInfo(view, vm),
    firmware: vmFirmware(vm),
    ...secureBootInfo(vm),
  };
}

/** `secureBoot` of a VM, when it can be told. */
function secureBootInfo(vm: XRecord): Pick<VMInfo, 'secureBoot'> {
  const secureBoot = vmSecureBoot(vm);
  return secureBoot === undefined ? {} : { secureBoot };
}

/** `networks` (network uuids) and `macs` of a VM, when the view has VIFs. */
function nicInfo(view: PoolView, vm: XRecord): Pick<VMInfo, 'networks' | 'macs'> {
  if (view.vifs === undefined) return {};
  const nics = vmNics(view, vm);
  return { networks: nics.map((n) => n.network), macs: nics.map((n) => n.mac) };
}

/** The other_config of a record. */
export function otherConfig(record: XRecord): Record<string, string> {
  return map(record.other_config);
}
