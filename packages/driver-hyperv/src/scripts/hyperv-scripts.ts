import type { PsScript } from '../powershell/ps-script.js';

// Every script the Hyper-V driver sends. Each is fixed text: values arrive only as `$p.<field>`
// (the call's base64 JSON parameters). Enums and GUIDs are projected to strings, since Windows
// PowerShell 5.1's ConvertTo-Json writes enums as numbers. The CIM scripts follow Microsoft's
// root\virtualization\v2 method docs (CreateSnapshot, ConvertToReferencePoint,
// GetVirtualDiskChanges, DestroyReferencePoint): reference parameters get the CIM instance, looked
// up by its key with Where-Object (never a WQL filter built from data), and a method's answer is
// projected to ReturnValue and the InstanceIDs of its Job and result (a reference out parameter
// carries only its key); src/wmi/wmi-method.ts waits on a job and reaches its result.

const NS = "'root\\virtualization\\v2'";

/** A calculated property `name` = `$_.<name>.ToString()`. */
const asText = (name: string) => `@{ Name = '${name}'; Expression = { $_.${name}.ToString() } }`;

/** Every VM of the host, projected. */
export const LIST_VMS: PsScript = {
  name: 'list-vms',
  body: `Get-VM | Select-Object -Property 'Name', ${asText('Id')}, ${asText('State')}, 'Generation', 'Version', 'ProcessorCount', 'MemoryStartup', 'Path', ${asText('CheckpointType')}`,
};

/** One VM by id (`$p.id`), projected as {@link LIST_VMS}. */
export const GET_VM: PsScript = {
  name: 'get-vm',
  body: `Get-VM -Id $p.id | Select-Object -Property 'Name', ${asText('Id')}, ${asText('State')}, 'Generation', 'Version', 'ProcessorCount', 'MemoryStartup', 'Path', ${asText('CheckpointType')}`,
};

/** The hard disk drives of VM `$p.vm` (its name), in controller order. */
export const VM_DRIVES: PsScript = {
  name: 'vm-drives',
  body: `Get-VMHardDiskDrive -VMName $p.vm | Select-Object -Property 'Path', ${asText('ControllerType')}, 'ControllerNumber', 'ControllerLocation'`,
};

/** The virtual hard disk at `$p.path`. */
export const GET_VHD: PsScript = {
  name: 'get-vhd',
  body: `Get-VHD -Path $p.path | Select-Object -Property 'Path', ${asText('VhdFormat')}, ${asText('VhdType')}, 'Size', 'BlockSize', 'LogicalSectorSize', 'ParentPath'`,
};

/** The network adapters of VM `$p.vm`. */
export const VM_NICS: PsScript = {
  name: 'vm-nics',
  body: "Get-VMNetworkAdapter -VMName $p.vm | Select-Object -Property 'Name', 'MacAddress', 'SwitchName'",
};

/** Secure Boot of generation 2 VM `$p.vm` (`Get-VMFirmware` refuses generation 1). */
export const VM_FIRMWARE: PsScript = {
  name: 'vm-firmware',
  body: `Get-VMFirmware -VMName $p.vm | Select-Object -Property ${asText('SecureBoot')}, 'SecureBootTemplate'`,
};

const SNAPSHOT_VIEW = `Select-Object -Property ${asText('Id')}, 'Name', ${asText('SnapshotType')}, @{ Name = 'CreationTime'; Expression = { $_.CreationTime.ToString('o') } }, @{ Name = 'HardDrives'; Expression = { @($_.HardDrives | Select-Object -Property 'Path') } }`;

/** The checkpoints of VM `$p.vm`, oldest first, with the files each froze. */
export const LIST_CHECKPOINTS: PsScript = {
  name: 'list-checkpoints',
  body: `Get-VMSnapshot -VMName $p.vm | ${SNAPSHOT_VIEW}`,
};

/** `Select-Object` of a method's answer: `ReturnValue`, `Job` (its InstanceID) and `Result` (the InstanceID of `out`). */
const METHOD_VIEW = (out?: string) =>
  [
    "Select-Object -Property 'ReturnValue'",
    "@{ Name = 'Job'; Expression = { $_.Job.InstanceID } }",
    ...(out ? [`@{ Name = 'Result'; Expression = { $_.${out}.InstanceID } }`] : []),
  ].join(', ');

/**
 * A recovery checkpoint of every disk of VM `$p.vmId` (its id: `Msvm_ComputerSystem.Name`),
 * SnapshotType 32768, through WMI. `Result` is the InstanceID of the checkpoint's
 * `Msvm_VirtualSystemSettingData` when the method completed at once (ReturnValue 0).
 */
export const CREATE_RECOVERY_CHECKPOINT: PsScript = {
  name: 'create-recovery-checkpoint',
  body: [
    `$svc = Get-CimInstance -Namespace ${NS} -ClassName 'Msvm_VirtualSystemSnapshotService'`,
    `$vm = Get-CimInstance -Namespace ${NS} -ClassName 'Msvm_ComputerSystem' | Where-Object { $_.Name -eq $p.vmId }`,
    `Invoke-CimMethod -InputObject $svc -MethodName 'CreateSnapshot' -Arguments @{ AffectedSystem = $vm; SnapshotType = [uint16]32768 } | ${METHOD_VIEW('ResultingSnapshot')}`,
  ].join('\n'),
};

/** A checkpoint of VM `$p.vm` named `$p.label`, of the VM's configured type (production by default). */
export const CHECKPOINT_VM: PsScript = {
  name: 'checkpoint-vm',
  body: 'Checkpoint-VM -Name $p.vm -SnapshotName $p.label',
};

/** Renames checkpoint `$p.name` of VM `$p.vm` to `$p.label`. */
export const RENAME_CHECKPOINT: PsScript = {
  name: 'rename-checkpoint',
  body: 'Rename-VMSnapshot -VMName $p.vm -Name $p.name -NewName $p.label',
};

/** Removes checkpoint `$p.name` of VM `$p.vm` (Hyper-V merges its differencing files). */
export const REMOVE_CHECKPOINT: PsScript = {
  name: 'remove-checkpoint',
  body: 'Remove-VMSnapshot -VMName $p.vm -Name $p.name',
};

/**
 * Turns recovery checkpoint `$p.snapshot` (the InstanceID of its `Msvm_VirtualSystemSettingData`)
 * into an RCT reference point; the checkpoint goes. `Result` is the InstanceID of the new
 * `Msvm_VirtualSystemReferencePoint` when the method completed at once.
 */
export const CONVERT_TO_REFERENCE_POINT: PsScript = {
  name: 'convert-to-reference-point',
  body: [
    `$svc = Get-CimInstance -Namespace ${NS} -ClassName 'Msvm_VirtualSystemSnapshotService'`,
    `$snap = Get-CimInstance -Namespace ${NS} -ClassName 'Msvm_VirtualSystemSettingData' | Where-Object { $_.InstanceID -eq $p.snapshot }`,
    `Invoke-CimMethod -InputObject $svc -MethodName 'ConvertToReferencePoint' -Arguments @{ AffectedSnapshot = $snap } | ${METHOD_VIEW('ResultingReferencePoint')}`,
  ].join('\n'),
};

/** The ranges of `$p.path` changed since RCT id `$p.limitId`, from `$p.offset` for `$p.length` bytes at most. */
export const GET_DISK_CHANGES: PsScript = {
  name: 'get-virtual-disk-changes',
  body: [
    `$ims = Get-CimInstance -Namespace ${NS} -ClassName 'Msvm_ImageManagementService'`,
    "Invoke-CimMethod -InputObject $ims -MethodName 'GetVirtualDiskChanges' -Arguments @{ Path = $p.path; LimitId = $p.limitId; ByteOffset = [uint64]$p.offset; ByteLength = [uint64]$p.length } | Select-Object -Property 'ReturnValue', 'ProcessedByteLength', 'ChangedByteOffsets', 'ChangedByteLengths'",
  ].join('\n'),
};

/** Destroys reference point `$p.point` (its InstanceID). */
export const DESTROY_REFERENCE_POINT: PsScript = {
  name: 'destroy-reference-point',
  body: [
    `$rps = Get-CimInstance -Namespace ${NS} -ClassName 'Msvm_VirtualSystemReferencePointService'`,
    `$point = Get-CimInstance -Namespace ${NS} -ClassName 'Msvm_VirtualSystemReferencePoint' | Where-Object { $_.InstanceID -eq $p.point }`,
    `Invoke-CimMethod -InputObject $rps -MethodName 'DestroyReferencePoint' -Arguments @{ AffectedReferencePoint = $point } | ${METHOD_VIEW()}`,
  ].join('\n'),
};

/** The state of WMI job `$p.job` (its InstanceID): `JobState` (7 Completed; 8, 9, 10 failed), and its error. */
export const WMI_JOB_STATE: PsScript = {
  name: 'wmi-job-state',
  body: `Get-CimInstance -Namespace ${NS} -ClassName 'Msvm_ConcreteJob' | Where-Object { $_.InstanceID -eq $p.job } | Select-Object -Property 'InstanceID', 'JobState', 'ErrorCode', 'ErrorDescription'`,
};

/**
 * What WMI job `$p.job` made: the InstanceIDs of its affected elements of class `$p.resultClass`
 * (`Msvm_AffectedJobElement`), e.g. the snapshot a `CreateSnapshot` job took.
 */
export const WMI_JOB_RESULT: PsScript = {
  name: 'wmi-job-result',
  body: [
    `$job = Get-CimInstance -Namespace ${NS} -ClassName 'Msvm_ConcreteJob' | Where-Object { $_.InstanceID -eq $p.job }`,
    "Get-CimAssociatedInstance -InputObject $job -Association 'Msvm_AffectedJobElement' -ResultClassName $p.resultClass | Select-Object -Property 'InstanceID'",
  ].join('\n'),
};

/**
 * Every reference point of the host (`Msvm_VirtualSystemReferencePoint` instances); the driver keeps
 * those whose `VirtualSystemIdentifier` is the VM's id. The class has no name or notes a caller
 * could set, so replikit cannot tag the ones it makes.
 */
export const LIST_REFERENCE_POINTS: PsScript = {
  name: 'list-reference-points',
  body: `Get-CimInstance -Namespace ${NS} -ClassName 'Msvm_VirtualSystemReferencePoint' | Select-Object -Property 'InstanceID', 'ReferencePointType', 'VirtualSystemIdentifier', 'ResilientChangeTrackingIdentifiers'`,
};

/** Every script of the source side, for the test that parses each one. */
export const SOURCE_SCRIPTS: readonly PsScript[] = [
  LIST_VMS,
  GET_VM,
  VM_DRIVES,
  GET_VHD,
  VM_NICS,
  VM_FIRMWARE,
  LIST_CHECKPOINTS,
  CREATE_RECOVERY_CHECKPOINT,
  CHECKPOINT_VM,
  RENAME_CHECKPOINT,
  REMOVE_CHECKPOINT,
  CONVERT_TO_REFERENCE_POINT,
  GET_DISK_CHANGES,
  DESTROY_REFERENCE_POINT,
  LIST_REFERENCE_POINTS,
  WMI_JOB_STATE,
  WMI_JOB_RESULT,
];
