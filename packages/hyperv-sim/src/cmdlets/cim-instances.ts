import type { HostState, SnapshotRecord, VmRecord } from '../host/host-state.js';
import { loadRct } from '../host/rct-log.js';
import type { AffectedElement, WmiJobRecord } from '../host/wmi-jobs.js';
import { CIM_TYPE_NAMES, cimTypeName } from '../objects/cim-types.js';
import { TYPE_NAMES } from '../objects/documented-types.js';
import { typed } from '../objects/ps-object.js';
import type { CmdletContext } from './context.js';

/** The namespace of every class the simulator has. */
export const NAMESPACE = 'root\\virtualization\\v2';

/** The `Msvm_ComputerSystem` of a VM: `Name` is its id (upper case, as Hyper-V writes it). */
export function computerSystemView(vm: VmRecord) {
  return typed(CIM_TYPE_NAMES.computerSystem, {
    Name: vm.id.toUpperCase(),
    ElementName: vm.name,
    Caption: 'Virtual Machine',
    Description: 'Microsoft Virtual Machine',
    CreationClassName: 'Msvm_ComputerSystem',
    EnabledState: vm.state === 'Running' ? 2 : 3,
  });
}

/** The `InstanceID` of a checkpoint's `Msvm_VirtualSystemSettingData`: `Microsoft:<its id>`. */
export function snapshotInstanceId(s: SnapshotRecord): string {
  return `Microsoft:${s.id.toUpperCase()}`;
}

/** Every `Msvm_VirtualSystemSettingData`: each VM's own settings, then each checkpoint's. */
export function settingDataViews(state: HostState): unknown[] {
  const vms = state.vms.map((vm) =>
    typed(CIM_TYPE_NAMES.settingData, {
      InstanceID: `Microsoft:${vm.id.toUpperCase()}`,
      ElementName: vm.name,
      VirtualSystemIdentifier: vm.id.toUpperCase(),
      VirtualSystemType: 'Microsoft:Hyper-V:System:Realized',
      ConfigurationID: vm.id.toUpperCase(),
    }),
  );
  const snapshots = (state.snapshots ?? []).flatMap((s) => {
    const vm = state.vms.find((v) => v.name === s.vmName);
    if (!vm) return [];
    return [
      typed(CIM_TYPE_NAMES.settingData, {
        InstanceID: snapshotInstanceId(s),
        ElementName: s.name,
        VirtualSystemIdentifier: vm.id.toUpperCase(),
        VirtualSystemType: `Microsoft:Hyper-V:Snapshot:${s.snapshotType === 'Recovery' ? 'Recovery' : 'Realized'}`,
        ConfigurationID: s.id.toUpperCase(),
        CreationTime: s.creationTime,
      }),
    ];
  });
  return [...vms, ...snapshots];
}

/** Every reference point of the host, as `Msvm_VirtualSystemReferencePoint` instances (RCT-based). */
export async function referencePointViews(c: CmdletContext): Promise<unknown[]> {
  const rct = await loadRct(c.root);
  return rct.referencePoints.map((p) =>
    typed(TYPE_NAMES.referencePoint, {
      InstanceID: p.instanceId,
      ReferencePointType: 2,
      VirtualSystemIdentifier: c.state.vms.find((v) => v.name === p.vmName)?.id.toUpperCase() ?? '',
      VirtualDiskIdentifiers: p.disks,
      ResilientChangeTrackingIdentifiers: p.rctIds,
    }),
  );
}

/** A job as `Get-CimInstance -ClassName Msvm_ConcreteJob` writes it. */
export function jobView(job: WmiJobRecord) {
  return typed(CIM_TYPE_NAMES.job, {
    InstanceID: job.instanceId,
    Caption: job.method,
    ElementName: job.method,
    JobState: job.jobState,
    PercentComplete: job.jobState === 4 ? 50 : 100,
    ErrorCode: job.errorCode,
    ErrorDescription: job.errorDescription,
  });
}

/**
 * A reference to an instance, as a method's out parameter carries one: only the key property
 * (`Name` for `Msvm_ComputerSystem`, `InstanceID` otherwise) is set.
 */
export function keyReference(element: AffectedElement) {
  const key = element.className === 'Msvm_ComputerSystem' ? 'Name' : 'InstanceID';
  return typed(cimTypeName(element.className), { [key]: element.key });
}

/** A service's instance (`Msvm_…Service`), the `-InputObject` of its methods. */
export function serviceView(className: string) {
  return typed(cimTypeName(className), { CreationClassName: className, Name: className });
}

/** The whole instance an affected element names now, or `undefined` once it is gone. */
export async function instanceOf(c: CmdletContext, element: AffectedElement): Promise<unknown> {
  const key = (v: unknown, property: string) => String((v as Record<string, unknown>)[property]).toLowerCase();
  const wanted = element.key.toLowerCase();
  switch (element.className) {
    case 'Msvm_ComputerSystem':
      return c.state.vms.map(computerSystemView).find((v) => key(v, 'Name') === wanted);
    case 'Msvm_VirtualSystemSettingData':
      return settingDataViews(c.state).find((v) => key(v, 'InstanceID') === wanted);
    case 'Msvm_VirtualSystemReferencePoint':
      return (await referencePointViews(c)).find((v) => key(v, 'InstanceID') === wanted);
    default:
      return undefined;
  }
}
