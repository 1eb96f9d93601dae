import { randomBytes, randomUUID } from 'node:crypto';
import { findVm, hostPath, type NicRecord, type VmRecord } from '../host/host-state.js';
import { TYPE_NAMES } from '../objects/documented-types.js';
import { typed } from '../objects/ps-object.js';
import { PsError } from '../ps-error.js';
import type { CmdletContext, CmdletHandler } from './context.js';

/** The fields of `Microsoft.HyperV.PowerShell.VirtualMachine` the simulator reports (enums as names). */
export function vmView(vm: VmRecord) {
  return typed(TYPE_NAMES.vm, {
    Id: vm.id,
    Name: vm.name,
    State: vm.state,
    Generation: vm.generation,
    Version: vm.version,
    ProcessorCount: vm.processorCount,
    MemoryStartup: vm.memoryStartup,
    DynamicMemoryEnabled: vm.dynamicMemoryEnabled,
    Notes: vm.notes,
    CheckpointType: vm.checkpointType,
    Path: vm.path,
  });
}

function vmNotOff(vm: VmRecord, action: string): PsError {
  return new PsError(
    'InvalidOperation',
    `'${vm.name}' failed to ${action}: the operation cannot be performed while the virtual machine is in its current state (${vm.state}).`,
    'InvalidState',
  );
}

const getVm: CmdletHandler = async (c) => {
  if (c.has('Id')) {
    const vm = c.state.vms.find((v) => v.id === String(c.arg('Id')).toLowerCase());
    if (!vm) {
      throw new PsError(
        'InvalidArgument',
        `Hyper-V was unable to find a virtual machine with id "${String(c.arg('Id'))}".`,
        'InvalidParameter,Microsoft.HyperV.PowerShell.Commands.GetVM',
      );
    }
    return vmView(vm);
  }
  if (!c.has('Name')) return c.state.vms.map(vmView);
  return vmView(findVm(c.state, c.arg('Name'), 'Get-VM'));
};

const newVm: CmdletHandler = async (c) => {
  const name = String(c.arg('Name') ?? '');
  if (name === '')
    throw new PsError(
      'InvalidArgument',
      'The Name parameter is empty.',
      'InvalidParameter,Microsoft.HyperV.PowerShell.Commands.NewVM',
    );
  const generation = c.has('Generation') ? Number(c.arg('Generation')) : 1;
  if (generation !== 1 && generation !== 2) {
    throw new PsError(
      'InvalidArgument',
      `Generation ${generation} is not 1 or 2.`,
      'InvalidParameter,Microsoft.HyperV.PowerShell.Commands.NewVM',
    );
  }
  const vm: VmRecord = {
    id: randomUUID(),
    name,
    state: 'Off',
    generation,
    version: String(c.arg('Version') ?? '10.0'),
    processorCount: 1,
    memoryStartup: c.has('MemoryStartupBytes') ? Number(c.arg('MemoryStartupBytes')) : 512 * 2 ** 20,
    dynamicMemoryEnabled: false,
    notes: '',
    checkpointType: 'Production',
    path: c.has('Path') ? await hostPath(c.root, c.arg('Path'), 'NewVM') : c.root,
    drives: [],
    // New-VM's generation 2 default: Secure Boot on with the Windows template.
    ...(generation === 2 ? { secureBoot: 'On' as const, secureBootTemplate: 'MicrosoftWindows' } : {}),
    nics: [
      {
        name: 'Network Adapter',
        macAddress: randomMac(),
        switchName: (c.arg('SwitchName') as string | undefined) ?? null,
      },
    ],
  };
  if (c.has('VHDPath')) {
    vm.drives.push({
      ...(await drivePaths(c, 'VHDPath', 'NewVM')),
      controllerType: generation === 1 ? 'IDE' : 'SCSI',
      controllerNumber: 0,
      controllerLocation: 0,
    });
  }
  c.state.vms.push(vm);
  c.markDirty();
  return vmView(vm);
};

const setVm: CmdletHandler = async (c) => {
  const vm = findVm(c.state, c.arg('Name'), 'Set-VM');
  if (c.has('ProcessorCount')) vm.processorCount = Number(c.arg('ProcessorCount'));
  if (c.has('MemoryStartupBytes')) vm.memoryStartup = Number(c.arg('MemoryStartupBytes'));
  if (c.has('DynamicMemory')) vm.dynamicMemoryEnabled = true;
  if (c.has('StaticMemory')) vm.dynamicMemoryEnabled = false;
  if (c.has('Notes')) vm.notes = String(c.arg('Notes'));
  if (c.has('CheckpointType')) vm.checkpointType = String(c.arg('CheckpointType')) as VmRecord['checkpointType'];
  if (c.has('NewVMName')) vm.name = String(c.arg('NewVMName'));
  c.markDirty();
  return c.has('Passthru') ? vmView(vm) : null;
};

const removeVm: CmdletHandler = async (c) => {
  const vm = findVm(c.state, c.arg('Name'), 'Remove-VM');
  if (vm.state !== 'Off') throw vmNotOff(vm, 'be deleted');
  c.state.vms = c.state.vms.filter((v) => v !== vm);
  // Its checkpoints go with it (Hyper-V deletes their configurations; the files stay on disk).
  c.state.snapshots = (c.state.snapshots ?? []).filter((s) => s.vmName !== vm.name);
  c.markDirty();
  return null;
};

const startVm: CmdletHandler = async (c) => {
  const vm = findVm(c.state, c.arg('Name'), 'Start-VM');
  vm.state = 'Running';
  c.markDirty();
  return c.has('Passthru') ? vmView(vm) : null;
};

const stopVm: CmdletHandler = async (c) => {
  const vm = findVm(c.state, c.arg('Name'), 'Stop-VM');
  vm.state = c.has('Save') ? 'Saved' : 'Off';
  c.markDirty();
  return c.has('Passthru') ? vmView(vm) : null;
};

const setProcessor: CmdletHandler = async (c) => {
  const vm = findVm(c.state, c.arg('VMName'), 'Set-VMProcessor');
  if (vm.state !== 'Off') throw vmNotOff(vm, 'modify its processors');
  if (c.has('Count')) vm.processorCount = Number(c.arg('Count'));
  c.markDirty();
  return null;
};

const setMemory: CmdletHandler = async (c) => {
  const vm = findVm(c.state, c.arg('VMName'), 'Set-VMMemory');
  if (c.has('StartupBytes')) vm.memoryStartup = Number(c.arg('StartupBytes'));
  if (c.has('DynamicMemoryEnabled')) vm.dynamicMemoryEnabled = c.arg('DynamicMemoryEnabled') === true;
  c.markDirty();
  return null;
};

const getDrives: CmdletHandler = async (c) => {
  const vm = findVm(c.state, c.arg('VMName'), 'Get-VMHardDiskDrive');
  return vm.drives.map((d) =>
    typed(TYPE_NAMES.drive, {
      VMName: vm.name,
      VMId: vm.id,
      Path: d.path,
      ControllerType: d.controllerType,
      ControllerNumber: d.controllerNumber,
      ControllerLocation: d.controllerLocation,
    }),
  );
};

const addDrive: CmdletHandler = async (c: CmdletContext) => {
  const vm = findVm(c.state, c.arg('VMName'), 'Add-VMHardDiskDrive');
  const controllerType = String(c.arg('ControllerType') ?? (vm.generation === 1 ? 'IDE' : 'SCSI')).toUpperCase();
  if (controllerType !== 'IDE' && controllerType !== 'SCSI') {
    throw new PsError(
      'InvalidArgument',
      `Cannot convert '${controllerType}' to a ControllerType (IDE, SCSI).`,
      'ParameterArgumentTransformationError,Microsoft.HyperV.PowerShell.Commands.AddVMHardDiskDrive',
    );
  }
  if (controllerType === 'IDE' && vm.generation === 2) {
    throw new PsError(
      'InvalidArgument',
      'A generation 2 virtual machine has no IDE controller.',
      'InvalidParameter,Microsoft.HyperV.PowerShell.Commands.AddVMHardDiskDrive',
    );
  }
  const number = c.has('ControllerNumber') ? Number(c.arg('ControllerNumber')) : 0;
  const taken = vm.drives.filter((d) => d.controllerType === controllerType && d.controllerNumber === number);
  const location = c.has('ControllerLocation') ? Number(c.arg('ControllerLocation')) : taken.length;
  if (taken.some((d) => d.controllerLocation === location)) {
    throw new PsError(
      'ResourceExists',
      `The controller location ${location} is already in use.`,
      'ObjectInUse,Microsoft.HyperV.PowerShell.Commands.AddVMHardDiskDrive',
    );
  }
  vm.drives.push({
    ...(await drivePaths(c, 'Path', 'AddVMHardDiskDrive')),
    controllerType,
    controllerNumber: number,
    controllerLocation: location,
  });
  c.markDirty();
  return null;
};

const getNics: CmdletHandler = async (c) => {
  const vm = findVm(c.state, c.arg('VMName'), 'Get-VMNetworkAdapter');
  return vm.nics.map((n) => nicView(vm, n));
};

const addNic: CmdletHandler = async (c) => {
  const vm = findVm(c.state, c.arg('VMName'), 'Add-VMNetworkAdapter');
  let mac = randomMac();
  if (c.has('StaticMacAddress')) {
    mac = String(c.arg('StaticMacAddress')).replace(/[-:]/g, '').toUpperCase();
    if (!/^[0-9A-F]{12}$/.test(mac)) {
      throw new PsError(
        'InvalidArgument',
        `'${String(c.arg('StaticMacAddress'))}' is not a valid MAC address.`,
        'InvalidParameter,Microsoft.HyperV.PowerShell.Commands.AddVMNetworkAdapter',
      );
    }
  }
  const nic = {
    name: String(c.arg('Name') ?? 'Network Adapter'),
    macAddress: mac,
    switchName: c.has('SwitchName') ? String(c.arg('SwitchName')) : null,
  };
  vm.nics.push(nic);
  c.markDirty();
  return c.has('Passthru') ? nicView(vm, nic) : null;
};

const removeNic: CmdletHandler = async (c) => {
  const vm = findVm(c.state, c.arg('VMName'), 'Remove-VMNetworkAdapter');
  const name = String(c.arg('Name') ?? '');
  const kept = vm.nics.filter((n) => n.name !== name);
  if (kept.length === vm.nics.length) {
    throw new PsError(
      'ObjectNotFound',
      `No network adapter named "${name}" was found on virtual machine "${vm.name}".`,
      'InvalidParameter,Microsoft.HyperV.PowerShell.Commands.RemoveVMNetworkAdapter',
    );
  }
  vm.nics = kept;
  c.markDirty();
  return null;
};

/** The modelled fields of `Microsoft.HyperV.PowerShell.VMNetworkAdapter`. */
function nicView(vm: VmRecord, nic: NicRecord) {
  return typed(TYPE_NAMES.nic, {
    VMName: vm.name,
    VMId: vm.id,
    Name: nic.name,
    MacAddress: nic.macAddress,
    SwitchName: nic.switchName,
  });
}

async function drivePaths(c: CmdletContext, parameter: string, cmdlet: string) {
  const path = await hostPath(c.root, c.arg(parameter), cmdlet);
  return { path, basePath: path };
}

/** A Hyper-V style dynamic MAC (the Microsoft 00-15-5D prefix), written as 12 hex digits. */
function randomMac(): string {
  return `00155D${randomBytes(3).toString('hex').toUpperCase()}`;
}

/** The VM, drive and adapter cmdlets. */
export const VM_CMDLETS: Record<string, CmdletHandler> = {
  'Get-VM': getVm,
  'New-VM': newVm,
  'Set-VM': setVm,
  'Remove-VM': removeVm,
  'Start-VM': startVm,
  'Stop-VM': stopVm,
  'Set-VMProcessor': setProcessor,
  'Set-VMMemory': setMemory,
  'Get-VMHardDiskDrive': getDrives,
  'Add-VMHardDiskDrive': addDrive,
  'Get-VMNetworkAdapter': getNics,
  'Add-VMNetworkAdapter': addNic,
  'Remove-VMNetworkAdapter': removeNic,
};
