/**
 * The cmdlets the simulator knows, with every parameter name their documented syntax blocks list
 * (all parameter sets merged). A script that names a cmdlet or a parameter missing from this table
 * is refused as real PowerShell refuses it. Names compare case-insensitively, as PowerShell does;
 * abbreviations of parameter names are not accepted (a driver should spell them out).
 *
 * Sources (the syntax sections of each page, Windows Server 2022 / PowerShell 7.x docs):
 * - Hyper-V module: https://learn.microsoft.com/powershell/module/hyper-v/<cmdlet-name>
 *   (MicrosoftDocs/windows-powershell-docs docset/winserver2022-ps/hyper-v/<Cmdlet-Name>.md)
 * - CimCmdlets: https://learn.microsoft.com/powershell/module/cimcmdlets/<cmdlet-name>
 * - Microsoft.PowerShell.Utility / Core: https://learn.microsoft.com/powershell/module/microsoft.powershell.utility/<cmdlet-name>
 * - Remoting (New-PSSession, Invoke-Command, Remove-PSSession):
 *   https://learn.microsoft.com/powershell/module/microsoft.powershell.core/<cmdlet-name>
 * - ConvertTo-SecureString: https://learn.microsoft.com/powershell/module/microsoft.powershell.security/convertto-securestring
 * - Common parameters: https://learn.microsoft.com/powershell/module/microsoft.powershell.core/about/about_commonparameters
 */

/** Parameters every cmdlet accepts (about_CommonParameters, plus the risk-mitigation pair). */
const COMMON = [
  'Debug',
  'ErrorAction',
  'ErrorVariable',
  'InformationAction',
  'InformationVariable',
  'OutBuffer',
  'OutVariable',
  'PipelineVariable',
  'ProgressAction',
  'Verbose',
  'WarningAction',
  'WarningVariable',
  'WhatIf',
  'Confirm',
];

/** The remoting trio every Hyper-V cmdlet that takes a name has. */
const REMOTE = ['CimSession', 'ComputerName', 'Credential'];

const TABLE: Record<string, readonly string[]> = {
  // hyper-v/get-vm
  'Get-VM': [...REMOTE, 'Name', 'Id', 'ClusterObject'],
  // hyper-v/new-vm
  'New-VM': [
    ...REMOTE,
    'Name',
    'MemoryStartupBytes',
    'Generation',
    'BootDevice',
    'SwitchName',
    'NewVHDPath',
    'NewVHDSizeBytes',
    'VHDPath',
    'NoVHD',
    'Path',
    'Version',
    'Prerelease',
    'Experimental',
    'GuestStateIsolationType',
    'AsJob',
    'Force',
  ],
  // hyper-v/set-vm
  'Set-VM': [
    ...REMOTE,
    'Name',
    'VM',
    'GuestControlledCacheTypes',
    'LowMemoryMappedIoSpace',
    'HighMemoryMappedIoSpace',
    'HighMemoryMappedIoBaseAddress',
    'ProcessorCount',
    'DynamicMemory',
    'StaticMemory',
    'MemoryMinimumBytes',
    'MemoryMaximumBytes',
    'MemoryStartupBytes',
    'AutomaticStartAction',
    'AutomaticStopAction',
    'AutomaticStartDelay',
    'AutomaticCriticalErrorAction',
    'AutomaticCriticalErrorActionTimeout',
    'AutomaticCheckpointsEnabled',
    'LockOnDisconnect',
    'Notes',
    'NewVMName',
    'SnapshotFileLocation',
    'SmartPagingFilePath',
    'CheckpointType',
    'EnhancedSessionTransportType',
    'AllowUnverifiedPaths',
    'Passthru',
  ],
  // hyper-v/get-vmhost
  'Get-VMHost': [...REMOTE],
  // hyper-v/set-vmhost
  'Set-VMHost': [
    ...REMOTE,
    'MaximumStorageMigrations',
    'MaximumVirtualMachineMigrations',
    'VirtualMachineMigrationPerformanceOption',
    'NumaSpanningEnabled',
    'ResourceMeteringSaveInterval',
    'UseAnyNetworkForMigration',
    'VirtualHardDiskPath',
    'VirtualMachinePath',
    'VirtualMachineMigrationAuthenticationType',
    'MacAddressMinimum',
    'MacAddressMaximum',
    'FibreChannelWwnn',
    'FibreChannelWwpnMaximum',
    'FibreChannelWwpnMinimum',
    'EnableEnhancedSessionMode',
    'Passthru',
  ],
  // hyper-v/remove-vm
  'Remove-VM': [...REMOTE, 'Name', 'VM', 'Force', 'Passthru'],
  // hyper-v/start-vm
  'Start-VM': [...REMOTE, 'Name', 'VM', 'AsJob', 'Passthru'],
  // hyper-v/stop-vm
  'Stop-VM': [...REMOTE, 'Name', 'VM', 'Save', 'TurnOff', 'Force', 'AsJob', 'Passthru'],
  // hyper-v/set-vmprocessor
  'Set-VMProcessor': [
    ...REMOTE,
    'VMName',
    'VM',
    'Count',
    'CompatibilityForMigrationEnabled',
    'CompatibilityForMigrationMode',
    'CompatibilityForOlderOperatingSystemsEnabled',
    'HwThreadCountPerCore',
    'Maximum',
    'Reserve',
    'RelativeWeight',
    'MaximumCountPerNumaNode',
    'MaximumCountPerNumaSocket',
    'ResourcePoolName',
    'EnableHostResourceProtection',
    'ExposeVirtualizationExtensions',
    'Perfmon',
    'EnableLegacyApicMode',
    'AllowACountMCount',
    'Passthru',
  ],
  // hyper-v/set-vmmemory
  'Set-VMMemory': [
    ...REMOTE,
    'VMName',
    'VM',
    'Buffer',
    'DynamicMemoryEnabled',
    'MaximumBytes',
    'StartupBytes',
    'MinimumBytes',
    'Priority',
    'MaximumAmountPerNumaNodeBytes',
    'ResourcePoolName',
    'Passthru',
  ],
  // hyper-v/new-vhd
  'New-VHD': [
    ...REMOTE,
    'Path',
    'ParentPath',
    'SizeBytes',
    'SourceDisk',
    'Dynamic',
    'Fixed',
    'Differencing',
    'BlockSizeBytes',
    'LogicalSectorSizeBytes',
    'PhysicalSectorSizeBytes',
    'AsJob',
  ],
  // hyper-v/get-vhd
  'Get-VHD': [...REMOTE, 'Path', 'DiskNumber', 'VMId'],
  // hyper-v/get-vmharddiskdrive
  'Get-VMHardDiskDrive': [
    ...REMOTE,
    'VMName',
    'VM',
    'VMSnapshot',
    'VMDriveController',
    'ControllerLocation',
    'ControllerNumber',
    'ControllerType',
  ],
  // hyper-v/add-vmharddiskdrive
  'Add-VMHardDiskDrive': [
    ...REMOTE,
    'VMName',
    'VM',
    'VMDriveController',
    'ControllerType',
    'ControllerNumber',
    'ControllerLocation',
    'Path',
    'DiskNumber',
    'ResourcePoolName',
    'SupportPersistentReservations',
    'AllowUnverifiedPaths',
    'MaximumIOPS',
    'MinimumIOPS',
    'QoSPolicyID',
    'QoSPolicy',
    'OverrideCacheAttributes',
    'Passthru',
  ],
  // hyper-v/get-vmfirmware (generation 2 VMs only)
  'Get-VMFirmware': [...REMOTE, 'VMName', 'VM', 'VMSnapshot'],
  // hyper-v/set-vmfirmware (generation 2 VMs only)
  'Set-VMFirmware': [
    ...REMOTE,
    'VMName',
    'VM',
    'VMFirmware',
    'BootOrder',
    'FirstBootDevice',
    'EnableSecureBoot',
    'SecureBootTemplate',
    'SecureBootTemplateId',
    'PreferredNetworkBootProtocol',
    'ConsoleMode',
    'PauseAfterBootFailure',
    'Passthru',
  ],
  // hyper-v/get-vmnetworkadapter
  'Get-VMNetworkAdapter': [
    ...REMOTE,
    'VMName',
    'VM',
    'Name',
    'All',
    'ManagementOS',
    'SwitchName',
    'IsLegacy',
    'VMSnapshot',
  ],
  // hyper-v/add-vmnetworkadapter
  'Add-VMNetworkAdapter': [
    ...REMOTE,
    'VMName',
    'VM',
    'ManagementOS',
    'SwitchName',
    'IsLegacy',
    'Name',
    'DynamicMacAddress',
    'StaticMacAddress',
    'Passthru',
    'ResourcePoolName',
    'DeviceNaming',
  ],
  // hyper-v/remove-vmnetworkadapter
  'Remove-VMNetworkAdapter': [
    ...REMOTE,
    'VMName',
    'VM',
    'Name',
    'ManagementOS',
    'SwitchName',
    'VMNetworkAdapter',
    'Passthru',
  ],
  // hyper-v/checkpoint-vm
  'Checkpoint-VM': [...REMOTE, 'Name', 'VM', 'SnapshotName', 'AsJob', 'Passthru'],
  // hyper-v/get-vmsnapshot
  'Get-VMSnapshot': [...REMOTE, 'VMName', 'VM', 'Name', 'Id', 'SnapshotType', 'ParentOf', 'ChildOf'],
  // hyper-v/remove-vmsnapshot
  'Remove-VMSnapshot': [
    ...REMOTE,
    'VMName',
    'VM',
    'VMSnapshot',
    'Name',
    'IncludeAllChildSnapshots',
    'AsJob',
    'Passthru',
  ],
  // hyper-v/restore-vmsnapshot
  'Restore-VMSnapshot': [...REMOTE, 'VMName', 'VM', 'VMSnapshot', 'Name', 'AsJob', 'Passthru'],
  // hyper-v/rename-vmsnapshot
  'Rename-VMSnapshot': [...REMOTE, 'VMName', 'VM', 'VMSnapshot', 'Name', 'NewName', 'Passthru'],
  // microsoft.powershell.core/new-pssession (every parameter set merged; 7.x docs, which add the
  // VMId/VMName/ContainerId/SSH sets to 5.1's ComputerName/Uri/Session sets)
  'New-PSSession': [
    'ComputerName',
    'Credential',
    'Name',
    'EnableNetworkAccess',
    'ConfigurationName',
    'Port',
    'UseSSL',
    'ApplicationName',
    'ThrottleLimit',
    'SessionOption',
    'Authentication',
    'CertificateThumbprint',
    'ConnectionUri',
    'AllowRedirection',
    'VMId',
    'VMName',
    'Session',
    'ContainerId',
    'RunAsAdministrator',
    'UseWindowsPowerShell',
    'HostName',
    'UserName',
    'KeyFilePath',
    'SSHTransport',
    'SSHConnection',
    'Subsystem',
    'ConnectingTimeout',
    'Options',
  ],
  // microsoft.powershell.core/invoke-command (every parameter set merged)
  'Invoke-Command': [
    'ScriptBlock',
    'StrictMode',
    'NoNewScope',
    'InputObject',
    'ArgumentList',
    'Session',
    'FilePath',
    'ThrottleLimit',
    'AsJob',
    'HideComputerName',
    'JobName',
    'RemoteDebug',
    'ComputerName',
    'Credential',
    'Port',
    'UseSSL',
    'ConfigurationName',
    'ApplicationName',
    'InDisconnectedSession',
    'SessionName',
    'SessionOption',
    'Authentication',
    'EnableNetworkAccess',
    'CertificateThumbprint',
    'ConnectionUri',
    'AllowRedirection',
    'VMId',
    'VMName',
    'ContainerId',
    'RunAsAdministrator',
    'HostName',
    'UserName',
    'KeyFilePath',
    'SSHTransport',
    'SSHConnection',
    'Subsystem',
    'ConnectingTimeout',
    'Options',
  ],
  // microsoft.powershell.core/remove-pssession (sets Id, Session, InstanceId, Name, ComputerName)
  'Remove-PSSession': ['Id', 'Session', 'InstanceId', 'Name', 'ComputerName'],
  // microsoft.powershell.security/convertto-securestring (sets Secure, PlainText, Open)
  'ConvertTo-SecureString': ['String', 'SecureKey', 'AsPlainText', 'Force', 'Key'],
  // microsoft.powershell.core/import-module (only `Import-Module Hyper-V` is used)
  'Import-Module': ['Name', 'Force', 'Global', 'Prefix', 'PassThru', 'RequiredVersion', 'MinimumVersion', 'Scope'],
  // cimcmdlets/get-ciminstance
  'Get-CimInstance': [
    'ClassName',
    'Namespace',
    'Filter',
    'Query',
    'QueryDialect',
    'KeyOnly',
    'Property',
    'Shallow',
    'InputObject',
    'ResourceUri',
    'CimSession',
    'ComputerName',
    'OperationTimeoutSec',
  ],
  // cimcmdlets/invoke-cimmethod
  'Invoke-CimMethod': [
    'ClassName',
    'CimClass',
    'InputObject',
    'Query',
    'QueryDialect',
    'ResourceUri',
    'Arguments',
    'MethodName',
    'Namespace',
    'CimSession',
    'ComputerName',
    'OperationTimeoutSec',
  ],
  // cimcmdlets/get-cimassociatedinstance
  'Get-CimAssociatedInstance': [
    'InputObject',
    'Association',
    'ResultClassName',
    'Namespace',
    'KeyOnly',
    'ResourceUri',
    'CimSession',
    'ComputerName',
    'OperationTimeoutSec',
  ],
  // microsoft.powershell.utility/convertfrom-json
  'ConvertFrom-Json': ['InputObject', 'AsHashtable', 'Depth', 'NoEnumerate', 'DateKind'],
  // microsoft.powershell.utility/convertto-json
  'ConvertTo-Json': ['InputObject', 'Depth', 'Compress', 'EnumsAsStrings', 'AsArray', 'EscapeHandling'],
  // microsoft.powershell.utility/select-object
  'Select-Object': [
    'InputObject',
    'Property',
    'ExcludeProperty',
    'ExpandProperty',
    'Unique',
    'CaseInsensitive',
    'Last',
    'First',
    'Skip',
    'SkipLast',
    'Wait',
    'Index',
    'SkipIndex',
  ],
  // microsoft.powershell.core/foreach-object (the process-block set)
  'ForEach-Object': [
    'InputObject',
    'Begin',
    'Process',
    'End',
    'RemainingScripts',
    'MemberName',
    'ArgumentList',
    'Parallel',
    'ThrottleLimit',
    'TimeoutSeconds',
    'AsJob',
    'UseNewRunspace',
  ],
  // microsoft.powershell.core/where-object (the script-block set)
  'Where-Object': ['InputObject', 'FilterScript', 'Property', 'Value'],
};

const BY_NAME = new Map<string, { name: string; parameters: Map<string, string> }>(
  Object.entries(TABLE).map(([name, params]) => [
    name.toLowerCase(),
    { name, parameters: new Map([...params, ...COMMON].map((p) => [p.toLowerCase(), p])) },
  ]),
);

/** A cmdlet's documented name and parameter names, looked up case-insensitively. */
export interface CmdletSignature {
  /** The name as the docs spell it. */
  readonly name: string;
  /** Lower-case parameter name → documented spelling (common parameters included). */
  readonly parameters: ReadonlyMap<string, string>;
}

/** The signature of `name`, or `undefined` when the table does not have that cmdlet. */
export function cmdletSignature(name: string): CmdletSignature | undefined {
  return BY_NAME.get(name.toLowerCase());
}

/** Every cmdlet name in the table, as documented. */
export function knownCmdlets(): string[] {
  return Object.keys(TABLE);
}
