import { CIM_TYPES } from './cim-types.js';

/**
 * How a property's value converts: `value` as it is (strings, numbers, booleans, null), `guid` and
 * `datetime` as .NET structs (projected by the driver through `.ToString()`), `enum:<Enum>` (see
 * `enums.ts`), `list:<Type>` an array of objects of a documented type.
 */
export type PropertyKind = 'value' | 'guid' | 'datetime' | `enum:${string}` | `list:${string}`;

/** A documented output type: its .NET name and its public properties. */
export interface DocumentedType {
  readonly name: string;
  readonly properties: Readonly<Record<string, PropertyKind>>;
}

const values = (...names: string[]): Record<string, PropertyKind> =>
  Object.fromEntries(names.map((n) => [n, 'value' as const]));

// Property names of the objects the Hyper-V module's cmdlets write, as each cmdlet's reference page
// names its output type (https://learn.microsoft.com/powershell/module/hyper-v/get-vm → VirtualMachine,
// get-vhd → VirtualHardDisk, get-vmsnapshot → VMSnapshot, get-vmharddiskdrive → HardDiskDrive,
// get-vmnetworkadapter → VMNetworkAdapter, get-vmfirmware → VMFirmware, get-vmhost → VMHost) and
// as `Get-Member` lists them on a host. The class reference pages themselves were not reachable
// through the project's search; the lists hold the commonly used public properties, not every one.
// A name outside a list is refused by the simulator's Select-Object; on a real host Select-Object
// would write it as $null, which is how a misspelling slips through there.

/** `Microsoft.HyperV.PowerShell.VirtualMachine` (Get-VM, New-VM -Passthru). */
const VIRTUAL_MACHINE: DocumentedType = {
  name: 'Microsoft.HyperV.PowerShell.VirtualMachine',
  properties: {
    ...values(
      'Name',
      'VMName',
      'ComputerName',
      'Generation',
      'Version',
      'ProcessorCount',
      'MemoryStartup',
      'MemoryAssigned',
      'MemoryMinimum',
      'MemoryMaximum',
      'DynamicMemoryEnabled',
      'Notes',
      'Path',
      'ConfigurationLocation',
      'SnapshotFileLocation',
      'SmartPagingFilePath',
      'Uptime',
      'Status',
      'CPUUsage',
      'IsClustered',
      'ParentSnapshotName',
      'AutomaticCheckpointsEnabled',
      'IntegrationServicesVersion',
      'NetworkAdapters',
      'DVDDrives',
      'Heartbeat',
    ),
    Id: 'guid',
    VMId: 'guid',
    ParentSnapshotId: 'guid',
    CreationTime: 'datetime',
    State: 'enum:VMState',
    CheckpointType: 'enum:CheckpointType',
    HardDrives: 'list:Microsoft.HyperV.PowerShell.HardDiskDrive',
  },
};

/** `Microsoft.HyperV.PowerShell.HardDiskDrive` (Get-VMHardDiskDrive; a VM's or a checkpoint's HardDrives). */
const HARD_DISK_DRIVE: DocumentedType = {
  name: 'Microsoft.HyperV.PowerShell.HardDiskDrive',
  properties: {
    ...values(
      'Name',
      'VMName',
      'ComputerName',
      'Path',
      'ControllerNumber',
      'ControllerLocation',
      'DiskNumber',
      'PoolName',
      'VMSnapshotName',
      'IsDeleted',
      'SupportPersistentReservations',
      'MaximumIOPS',
      'MinimumIOPS',
    ),
    Id: 'value',
    VMId: 'guid',
    VMSnapshotId: 'guid',
    ControllerType: 'enum:ControllerType',
  },
};

/** `Microsoft.Vhd.PowerShell.VirtualHardDisk` (Get-VHD, New-VHD). */
const VIRTUAL_HARD_DISK: DocumentedType = {
  name: 'Microsoft.Vhd.PowerShell.VirtualHardDisk',
  properties: {
    ...values(
      'ComputerName',
      'Path',
      'FileSize',
      'Size',
      'MinimumSize',
      'LogicalSectorSize',
      'PhysicalSectorSize',
      'BlockSize',
      'ParentPath',
      'DiskIdentifier',
      'FragmentationPercentage',
      'Alignment',
      'Attached',
      'DiskNumber',
      'Number',
    ),
    VhdFormat: 'enum:VhdFormat',
    VhdType: 'enum:VhdType',
  },
};

/** `Microsoft.HyperV.PowerShell.VMSnapshot` (Get-VMSnapshot, Checkpoint-VM -Passthru). */
const VM_SNAPSHOT: DocumentedType = {
  name: 'Microsoft.HyperV.PowerShell.VMSnapshot',
  properties: {
    ...values(
      'Name',
      'VMName',
      'ComputerName',
      'ParentSnapshotName',
      'Generation',
      'Version',
      'ProcessorCount',
      'MemoryStartup',
      'Notes',
      'Path',
      'IsDeleted',
      'NetworkAdapters',
      'DVDDrives',
    ),
    Id: 'guid',
    VMId: 'guid',
    ParentSnapshotId: 'guid',
    CreationTime: 'datetime',
    SnapshotType: 'enum:SnapshotType',
    State: 'enum:VMState',
    HardDrives: 'list:Microsoft.HyperV.PowerShell.HardDiskDrive',
  },
};

/** `Microsoft.HyperV.PowerShell.VMNetworkAdapter` (Get-VMNetworkAdapter, Add-VMNetworkAdapter -Passthru). */
const VM_NETWORK_ADAPTER: DocumentedType = {
  name: 'Microsoft.HyperV.PowerShell.VMNetworkAdapter',
  properties: {
    ...values(
      'Name',
      'VMName',
      'ComputerName',
      'MacAddress',
      'DynamicMacAddressEnabled',
      'SwitchName',
      'IPAddresses',
      'Status',
      'Connected',
      'IsLegacy',
      'IsManagementOs',
      'Id',
    ),
    VMId: 'guid',
    SwitchId: 'guid',
  },
};

/** `Microsoft.HyperV.PowerShell.VMFirmware` (Get-VMFirmware, Set-VMFirmware -Passthru). */
const VM_FIRMWARE: DocumentedType = {
  name: 'Microsoft.HyperV.PowerShell.VMFirmware',
  properties: {
    ...values(
      'VMName',
      'ComputerName',
      'SecureBootTemplate',
      'BootOrder',
      'PreferredNetworkBootProtocol',
      'ConsoleMode',
      'PauseAfterBootFailure',
    ),
    VMId: 'guid',
    SecureBootTemplateId: 'guid',
    SecureBoot: 'enum:OnOffState',
  },
};

/** `Microsoft.HyperV.PowerShell.VMHost` (Get-VMHost). */
const VM_HOST: DocumentedType = {
  name: 'Microsoft.HyperV.PowerShell.VMHost',
  properties: values(
    'ComputerName',
    'Name',
    'FullyQualifiedDomainName',
    'VirtualHardDiskPath',
    'VirtualMachinePath',
    'LogicalProcessorCount',
    'MemoryCapacity',
    'MacAddressMinimum',
    'MacAddressMaximum',
    'MaximumStorageMigrations',
    'MaximumVirtualMachineMigrations',
    'VirtualMachineMigrationEnabled',
  ),
};

/**
 * `Microsoft.Management.Infrastructure.CimMethodResult` of `GetVirtualDiskChanges`: `ReturnValue`
 * and the method's out parameters (`ChangedByteOffsets`, `ChangedByteLengths`,
 * `ProcessedByteLength`, `Job`), after
 * https://learn.microsoft.com/windows/win32/hyperv_v2/getvirtualdiskchanges-msvm-imagemanagementservice.
 */
const DISK_CHANGES_RESULT: DocumentedType = {
  name: 'CimMethodResult#GetVirtualDiskChanges',
  properties: values(
    'ReturnValue',
    'ChangedByteOffsets',
    'ChangedByteLengths',
    'ProcessedByteLength',
    'Job',
    'PSComputerName',
  ),
};

/**
 * `Msvm_VirtualSystemReferencePoint` (root\\virtualization\\v2), as `Get-CimInstance` writes its
 * instances: the class's own properties and those it inherits from CIM_ManagedElement, after
 * https://learn.microsoft.com/windows/win32/hyperv_v2/msvm-virtualsystemreferencepoint.
 */
const REFERENCE_POINT: DocumentedType = {
  name: 'Microsoft.Management.Infrastructure.CimInstance#root/virtualization/v2/Msvm_VirtualSystemReferencePoint',
  properties: values(
    'InstanceID',
    'Caption',
    'Description',
    'ElementName',
    'ReferencePointType',
    'ConsistencyLevel',
    'VirtualSystemIdentifier',
    'HasAssociatedData',
    'VirtualDiskIdentifiers',
    'ResilientChangeTrackingIdentifiers',
    'PSComputerName',
  ),
};

/** The documented types by name. */
export const DOCUMENTED_TYPES: ReadonlyMap<string, DocumentedType> = new Map(
  [
    VIRTUAL_MACHINE,
    HARD_DISK_DRIVE,
    VIRTUAL_HARD_DISK,
    VM_SNAPSHOT,
    VM_NETWORK_ADAPTER,
    VM_FIRMWARE,
    VM_HOST,
    DISK_CHANGES_RESULT,
    REFERENCE_POINT,
    ...CIM_TYPES,
  ].map((t) => [t.name, t]),
);

/** Short names the cmdlets tag their views with. */
export const TYPE_NAMES = {
  vm: VIRTUAL_MACHINE.name,
  drive: HARD_DISK_DRIVE.name,
  vhd: VIRTUAL_HARD_DISK.name,
  snapshot: VM_SNAPSHOT.name,
  nic: VM_NETWORK_ADAPTER.name,
  firmware: VM_FIRMWARE.name,
  host: VM_HOST.name,
  diskChanges: DISK_CHANGES_RESULT.name,
  referencePoint: REFERENCE_POINT.name,
} as const;
