import type { DocumentedType, PropertyKind } from './documented-types.js';

const values = (...names: string[]): Record<string, PropertyKind> =>
  Object.fromEntries(names.map((n) => [n, 'value' as const]));

/** The .NET type name `Get-CimInstance` gives an instance of a `root/virtualization/v2` class. */
export function cimTypeName(className: string): string {
  return `Microsoft.Management.Infrastructure.CimInstance#root/virtualization/v2/${className}`;
}

/** The class of a CIM instance view (from its type name), or `undefined` for anything else. */
export function cimClassOf(typeName: string | undefined): string | undefined {
  const m = /^Microsoft\.Management\.Infrastructure\.CimInstance#root\/virtualization\/v2\/([A-Za-z_]+)$/.exec(
    typeName ?? '',
  );
  return m?.[1];
}

// Properties of the root\virtualization\v2 classes the driver reads, as the class reference pages
// list them (https://learn.microsoft.com/windows/win32/hyperv_v2/<class-name>): the commonly used
// ones, not every inherited property. A name outside a list is refused by the simulator's
// Select-Object and Where-Object.

/** `Msvm_ComputerSystem` (…/msvm-computersystem): `Name` is the VM's GUID, `ElementName` its name. */
const COMPUTER_SYSTEM: DocumentedType = {
  name: cimTypeName('Msvm_ComputerSystem'),
  properties: values(
    'Name',
    'ElementName',
    'Caption',
    'Description',
    'CreationClassName',
    'EnabledState',
    'HealthState',
    'InstallDate',
    'PSComputerName',
  ),
};

/**
 * `Msvm_VirtualSystemSettingData` (…/msvm-virtualsystemsettingdata): a VM's settings or one of its
 * snapshots (`VirtualSystemType` `Microsoft:Hyper-V:Snapshot:Recovery` for a recovery checkpoint).
 */
const SETTING_DATA: DocumentedType = {
  name: cimTypeName('Msvm_VirtualSystemSettingData'),
  properties: values(
    'InstanceID',
    'ElementName',
    'Caption',
    'Description',
    'VirtualSystemIdentifier',
    'VirtualSystemType',
    'ConfigurationID',
    'CreationTime',
    'Parent',
    'PSComputerName',
  ),
};

/** `Msvm_ConcreteJob` (…/msvm-concretejob): `JobState` 7 Completed, 8 Terminated, 9 Killed, 10 Exception. */
const CONCRETE_JOB: DocumentedType = {
  name: cimTypeName('Msvm_ConcreteJob'),
  properties: values(
    'InstanceID',
    'Caption',
    'Description',
    'ElementName',
    'JobState',
    'JobStatus',
    'JobType',
    'PercentComplete',
    'ErrorCode',
    'ErrorDescription',
    'ErrorSummaryDescription',
    'Cancellable',
    'PSComputerName',
  ),
};

/** The out parameters of a `root\virtualization\v2` method, as `Invoke-CimMethod` writes them. */
function methodResult(method: string, ...outs: string[]): DocumentedType {
  return { name: `CimMethodResult#${method}`, properties: values('ReturnValue', ...outs, 'PSComputerName') };
}

/** CreateSnapshot (…/msvm-virtualsystemsnapshotservice-createsnapshot): ResultingSnapshot, Job. */
const CREATE_SNAPSHOT_RESULT = methodResult('CreateSnapshot', 'ResultingSnapshot', 'Job');
/** ConvertToReferencePoint (…/msvm-virtualsystemsnapshotservice-converttoreferencepoint). */
const CONVERT_RESULT = methodResult('ConvertToReferencePoint', 'ResultingReferencePoint', 'Job');
/** DestroyReferencePoint (…/msvm-virtualsystemreferencepointservice-destroyreferencepoint): Job. */
const DESTROY_RESULT = methodResult('DestroyReferencePoint', 'Job');

/** The CIM types this file documents. */
export const CIM_TYPES: readonly DocumentedType[] = [
  COMPUTER_SYSTEM,
  SETTING_DATA,
  CONCRETE_JOB,
  CREATE_SNAPSHOT_RESULT,
  CONVERT_RESULT,
  DESTROY_RESULT,
];

/** Short names of the CIM types. */
export const CIM_TYPE_NAMES = {
  computerSystem: COMPUTER_SYSTEM.name,
  settingData: SETTING_DATA.name,
  job: CONCRETE_JOB.name,
  createSnapshot: CREATE_SNAPSHOT_RESULT.name,
  convert: CONVERT_RESULT.name,
  destroy: DESTROY_RESULT.name,
} as const;
