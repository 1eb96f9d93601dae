import { randomUUID } from 'node:crypto';
import { mkdir, readFile, realpath, rename, writeFile } from 'node:fs/promises';
import { dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { PsError } from '../ps-error.js';

/** A disk attached to a simulated VM. */
export interface DriveRecord {
  /** Absolute path of the drive's current file: the VHDX, or the newest `.avhdx` of a checkpoint. */
  path: string;
  /** The disk's base VHDX (its identity for change tracking). */
  basePath: string;
  controllerType: 'IDE' | 'SCSI';
  controllerNumber: number;
  controllerLocation: number;
}

/** A network adapter of a simulated VM. */
export interface NicRecord {
  name: string;
  macAddress: string;
  switchName: string | null;
}

/** A VM as the simulated host stores it (one entry of `host.json`). */
export interface VmRecord {
  id: string;
  name: string;
  state: 'Off' | 'Running' | 'Saved' | 'Paused';
  generation: 1 | 2;
  version: string;
  processorCount: number;
  memoryStartup: number;
  dynamicMemoryEnabled: boolean;
  notes: string;
  checkpointType: 'Disabled' | 'Production' | 'ProductionOnly' | 'Standard';
  path: string;
  drives: DriveRecord[];
  nics: NicRecord[];
  /**
   * Generation 2 only: Secure Boot (`Get-VMFirmware`'s `SecureBoot`). Absent (a host file from
   * before the simulator modelled firmware) reads as Hyper-V's default for a new VM, `On`.
   */
  secureBoot?: 'On' | 'Off';
  /** Generation 2 only: the Secure Boot template's name; absent reads as `MicrosoftWindows`. */
  secureBootTemplate?: string;
}

/** A checkpoint: the files it froze, one per drive, in drive order. */
export interface SnapshotRecord {
  id: string;
  name: string;
  vmName: string;
  /** `Standard` from `Checkpoint-VM`. */
  snapshotType: 'Standard' | 'Recovery';
  /** The drive files as they were when the checkpoint was taken; they no longer change. */
  frozen: string[];
  /** Each drive's change-tracking sequence when the checkpoint was taken. */
  seqs?: number[];
  creationTime: string;
}

/** The host's own settings (`Get-VMHost` / `Set-VMHost`); unset fields take the host's defaults. */
export interface VmHostRecord {
  /** Absolute path of the default folder for new virtual hard disks. */
  virtualHardDiskPath?: string;
  /** Absolute path of the default folder for VM configuration files. */
  virtualMachinePath?: string;
}

/** Everything the simulated host knows, saved as `host.json` in its folder. */
export interface HostState {
  vms: VmRecord[];
  snapshots?: SnapshotRecord[];
  vmHost?: VmHostRecord;
}

/** The file that holds a host's state. */
export function stateFile(root: string): string {
  return join(root, 'host.json');
}

/** Reads a host's state (an empty host when the file does not exist yet). */
export async function loadState(root: string): Promise<HostState> {
  try {
    return JSON.parse(await readFile(stateFile(root), 'utf8')) as HostState;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { vms: [] };
    throw error;
  }
}

/** Saves a host's state atomically (temporary file, then rename). */
export async function saveState(root: string, state: HostState): Promise<void> {
  const tmp = `${stateFile(root)}.${randomUUID()}.tmp`;
  await writeFile(tmp, `${JSON.stringify(state, null, 2)}\n`);
  await rename(tmp, stateFile(root));
}

/**
 * `path` as a file of the simulated host: it must be absolute and inside the host folder, and the
 * folder holding it must be reached without a symbolic link. The folder is created if missing.
 */
export async function hostPath(root: string, path: unknown, cmdlet: string): Promise<string> {
  if (typeof path !== 'string' || path === '' || !isAbsolute(path)) {
    throw new PsError(
      'InvalidArgument',
      `The path '${String(path)}' is not an absolute path.`,
      `InvalidParameter,${cmdlet}`,
    );
  }
  const full = resolve(path);
  const inside = relative(resolve(root), full);
  if (inside === '' || inside.startsWith('..') || isAbsolute(inside)) {
    throw new PsError(
      'PermissionDenied',
      `The path '${path}' is outside the simulated host's storage.`,
      `AccessDenied,${cmdlet}`,
    );
  }
  await mkdir(dirname(full), { recursive: true });
  const realDir = await realpath(dirname(full));
  if (realDir !== join(await realpath(root), dirname(inside))) {
    throw new PsError('PermissionDenied', `The path '${path}' goes through a symbolic link.`, `AccessDenied,${cmdlet}`);
  }
  return full;
}

/** The VM named `name` (exactly, as Hyper-V compares names case-insensitively), or the Hyper-V error. */
export function findVm(state: HostState, name: unknown, cmdlet: string): VmRecord {
  const wanted = String(name).toLowerCase();
  const vm = state.vms.find((v) => v.name.toLowerCase() === wanted);
  if (!vm) {
    throw new PsError(
      'InvalidArgument',
      `Hyper-V was unable to find a virtual machine with name "${String(name)}".`,
      `InvalidParameter,Microsoft.HyperV.PowerShell.Commands.${cmdlet.replace('-', '')}`,
    );
  }
  return vm;
}
