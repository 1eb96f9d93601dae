import type { DiskRef, PowerState, VMInfo } from '@replikit/core';

/** A VM as the `list-vms` / `get-vm` scripts project it. */
export interface VmRow {
  Name: string;
  Id: string;
  State: string;
  Generation: number;
  Version: string;
  ProcessorCount: number;
  MemoryStartup: number;
  Path: string;
  CheckpointType: string;
}

/** A hard disk drive as the `vm-drives` script projects it. */
export interface DriveRow {
  Path: string;
  ControllerType: string;
  ControllerNumber: number;
  ControllerLocation: number;
}

/** A virtual hard disk as the `get-vhd` script projects it. */
export interface VhdRow {
  Path: string;
  VhdFormat: string;
  VhdType: string;
  Size: number;
  BlockSize: number;
  LogicalSectorSize: number;
  ParentPath: string | null;
}

/** A network adapter as the `vm-nics` script projects it. */
export interface NicRow {
  Name: string;
  MacAddress: string;
  SwitchName: string | null;
}

/** A checkpoint as the `list-checkpoints` script projects it. */
export interface CheckpointRow {
  Id: string;
  Name: string;
  SnapshotType: string;
  CreationTime: string;
  HardDrives: Array<{ Path: string }>;
}

/** A network adapter of a Hyper-V VM, as {@link HyperVVMInfo} reports it. */
export interface HyperVNic {
  /** The adapter's name. */
  name: string;
  /** Its MAC address, 12 hex digits without separators. */
  macAddress: string;
  /** The virtual switch it is connected to, or `null` when it is disconnected. */
  switchName: string | null;
}

/** A Hyper-V VM: core's {@link VMInfo} plus what a replica must copy. Plain data. */
export interface HyperVVMInfo extends VMInfo {
  /** 1 (BIOS) or 2 (UEFI); fixed when a VM is created. */
  generation: 1 | 2;
  /** The configuration version (`9.0`): RCT needs 6.2 or later. */
  configurationVersion: string;
  /** The network adapters with their MACs, in the host's order. */
  nics: HyperVNic[];
  /** Generation 2: the Secure Boot template's name (`MicrosoftWindows`, …). */
  secureBootTemplate?: string;
}

/** A generation 2 VM's firmware as the `vm-firmware` script projects it. */
export interface FirmwareRow {
  /** `On` or `Off`. */
  SecureBoot: string;
  SecureBootTemplate: string | null;
}

/** Hyper-V's VMState name (`Running`, `Off`, …) as core's power state. */
export function powerStateOf(state: string): PowerState {
  if (/^Running/.test(state)) return 'running';
  if (/^(Off|Saved)/.test(state)) return 'stopped';
  if (/^Paused/.test(state)) return 'paused';
  return 'unknown';
}

/** The boot firmware of a VM of `generation`: generation 1 boots BIOS, generation 2 UEFI. */
export function firmwareOf(generation: 1 | 2): 'bios' | 'uefi' {
  return generation === 2 ? 'uefi' : 'bios';
}

/**
 * A Hyper-V MAC (`00155D0A0B0C`) as core's {@link VMInfo.macs} spells it (`00:15:5d:0a:0b:0c`);
 * `''` for none, and for `000000000000`, which Hyper-V shows for a dynamic MAC not assigned yet.
 */
export function coreMac(mac: string | null | undefined): string {
  const bare = (mac ?? '').replace(/[-:.]/g, '').toLowerCase();
  if (!/^[0-9a-f]{12}$/.test(bare) || /^0+$/.test(bare)) return '';
  return (bare.match(/../g) ?? []).join(':');
}

/** True when configuration version `version` supports Resilient Change Tracking (6.2 or later). */
export function versionHasRct(version: string): boolean {
  const m = /^(\d+)\.(\d+)/.exec(version);
  if (!m) return false;
  const major = Number(m[1]);
  return major > 6 || (major === 6 && Number(m[2]) >= 2);
}

/** A drive's id within its VM: its controller slot (`SCSI:0:1`), stable while the drive stays. */
export function slotId(drive: DriveRow): string {
  return `${drive.ControllerType}:${drive.ControllerNumber}:${drive.ControllerLocation}`;
}

/** The last component of a Windows or POSIX path. */
export function fileName(path: string): string {
  return path.split(/[\\/]/).at(-1) ?? path;
}

/**
 * A disk's label from one of its files: the base file's name, also when `path` is a checkpoint's
 * differencing file (`<base>_<GUID>.avhdx` names the `.vhdx` it stands on).
 */
export function diskLabel(path: string): string {
  const name = fileName(path);
  const m = /^(.*)_[0-9A-Fa-f]{8}-(?:[0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}\.avhdx$/i.exec(name);
  return m ? `${m[1]}.vhdx` : name;
}

/** The disk of a VM drive, as a {@link DiskRef}. */
export function diskRefOf(vmId: string, drive: DriveRow, vhd: VhdRow): DiskRef {
  return {
    id: slotId(drive),
    vmId,
    size: vhd.Size,
    label: diskLabel(drive.Path),
    meta: { format: vhd.VhdFormat },
  };
}
