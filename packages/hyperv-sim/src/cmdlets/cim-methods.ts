import { randomUUID } from 'node:crypto';
import type { SnapshotRecord, VmRecord } from '../host/host-state.js';
import { loadRct, rctSeq, saveRct, tracking } from '../host/rct-log.js';
import type { AffectedElement } from '../host/wmi-jobs.js';
import { cimClassOf } from '../objects/cim-types.js';
import { typeOf } from '../objects/ps-object.js';
import { PsError } from '../ps-error.js';
import { snapshotInstanceId } from './cim-instances.js';
import type { CmdletContext } from './context.js';
import { mergeCheckpoint, takeCheckpoint } from './snapshot-cmdlets.js';

/** ReturnValue "Invalid Parameter" as the simulator answers it (32773, as GetVirtualDiskChanges documents). */
export const INVALID_PARAMETER = 32773;

/** What a method works on, by id, resolved from its reference arguments (kept by a job until it runs). */
export type MethodTarget = Record<string, string>;

/**
 * A `root\virtualization\v2` method that may run as a job: the service class it belongs to, the
 * out parameter naming its result, a check of its arguments (done before any job starts, as
 * "Method Parameters Checked" says), and the work.
 */
export interface JobMethod {
  readonly service: string;
  /** The out parameter that refers to the result (`ResultingSnapshot`), when the method has one. */
  readonly resultOut?: string;
  /** The target, or a ReturnValue when the arguments are refused; throws for a type mismatch. */
  check(c: CmdletContext, args: Record<string, unknown>): MethodTarget | number;
  /** Does the work: the element made (the job's affected elements), or a failing ReturnValue. */
  perform(c: CmdletContext, target: MethodTarget): Promise<AffectedElement[] | number>;
}

/**
 * The key of the CIM instance given for reference parameter `name` (of class `className`), or
 * `undefined` when none was given ($null). Anything but one instance of that class (a string, a
 * number, several instances) is refused as CIM refuses a value of the wrong type for a `REF`
 * parameter. Modelled on WBEM_E_TYPE_MISMATCH (0x80041005); the exact text a real host writes was
 * not checked on one.
 */
function referenceKey(
  args: Record<string, unknown>,
  name: string,
  className: string,
  keyProperty: string,
): string | undefined {
  const value = args[name];
  if (value === null || value === undefined) return undefined;
  if (Array.isArray(value) || cimClassOf(typeOf(value)) !== className) {
    const given = Array.isArray(value)
      ? 'an array'
      : typeof value === 'object'
        ? 'an object of another class'
        : `a ${typeof value}`;
    throw new PsError(
      'InvalidType',
      `Type mismatch for parameter "${name}": it is a reference to ${className} (pass the CIM instance), not ${given}.`,
      'HRESULT 0x80041005,Microsoft.Management.Infrastructure.CimCmdlets.InvokeCimMethodCommand',
    );
  }
  return String((value as Record<string, unknown>)[keyProperty] ?? '');
}

const createSnapshot: JobMethod = {
  service: 'Msvm_VirtualSystemSnapshotService',
  resultOut: 'ResultingSnapshot',
  check(c, args) {
    const id = referenceKey(args, 'AffectedSystem', 'Msvm_ComputerSystem', 'Name')?.toLowerCase();
    const vm = c.state.vms.find((v) => v.id.toLowerCase() === id);
    if (!vm) return INVALID_PARAMETER;
    return { vmId: vm.id, snapshotType: String(Number(args.SnapshotType ?? 2)) };
  },
  async perform(c, target) {
    const vm = c.state.vms.find((v) => v.id === target.vmId);
    if (!vm) return INVALID_PARAMETER;
    const type = target.snapshotType === '32768' ? 'Recovery' : 'Standard';
    const record = await takeCheckpoint(c, vm, `Recovery ${new Date().toISOString()}`, type);
    return [
      { className: 'Msvm_VirtualSystemSettingData', key: snapshotInstanceId(record) },
      { className: 'Msvm_ComputerSystem', key: vm.id.toUpperCase() },
    ];
  },
};

function snapshotByInstance(c: CmdletContext, instanceId: string | undefined): SnapshotRecord | undefined {
  return (c.state.snapshots ?? []).find((s) => snapshotInstanceId(s).toLowerCase() === instanceId?.toLowerCase());
}

const convertToReferencePoint: JobMethod = {
  service: 'Msvm_VirtualSystemSnapshotService',
  resultOut: 'ResultingReferencePoint',
  check(c, args) {
    const key = referenceKey(args, 'AffectedSnapshot', 'Msvm_VirtualSystemSettingData', 'InstanceID');
    const snap = snapshotByInstance(c, key);
    if (snap?.snapshotType !== 'Recovery') return INVALID_PARAMETER;
    return { snapshot: snapshotInstanceId(snap) };
  },
  async perform(c, target) {
    const snap = snapshotByInstance(c, target.snapshot);
    if (snap?.snapshotType !== 'Recovery') return INVALID_PARAMETER;
    const vm = c.state.vms.find((v) => v.name === snap.vmName) as VmRecord;
    const rct = await loadRct(c.root);
    const point = {
      instanceId: `Microsoft:${randomUUID()}`,
      vmName: vm.name,
      disks: vm.drives.map((d) => d.basePath),
      rctIds: vm.drives.map((d, i) => {
        const t = tracking(rct, d.basePath);
        return `rctX:${t.trackingId}:${String(snap.seqs?.[i] ?? 0).padStart(8, '0')}`;
      }),
    };
    rct.referencePoints.push(point);
    await saveRct(c.root, rct);
    await mergeCheckpoint(c, vm, snap);
    return [{ className: 'Msvm_VirtualSystemReferencePoint', key: point.instanceId }];
  },
};

const destroyReferencePoint: JobMethod = {
  service: 'Msvm_VirtualSystemReferencePointService',
  check(_c, args) {
    const key = referenceKey(args, 'AffectedReferencePoint', 'Msvm_VirtualSystemReferencePoint', 'InstanceID');
    return key === undefined ? INVALID_PARAMETER : { point: key };
  },
  async perform(c, target) {
    const rct = await loadRct(c.root);
    const point = rct.referencePoints.find((p) => p.instanceId === target.point);
    if (!point) return INVALID_PARAMETER;
    rct.referencePoints = rct.referencePoints.filter((p) => p !== point);
    for (const base of point.disks) {
      const t = tracking(rct, base);
      const live = rct.referencePoints
        .flatMap((p) => p.rctIds)
        .map((id) => rctSeq(t, id))
        .filter((s): s is number => s !== undefined);
      // Ids older than every live reference point are gone; their changes need not be kept.
      t.floor = live.length > 0 ? Math.min(...live) : t.seq;
      t.changes = t.changes.filter((r) => r.seq > t.floor);
    }
    await saveRct(c.root, rct);
    return [];
  },
};

/** The methods that answer with a job when the host's `wmiJobs` fault says so. */
export const JOB_METHODS: Readonly<Record<string, JobMethod>> = {
  CreateSnapshot: createSnapshot,
  ConvertToReferencePoint: convertToReferencePoint,
  DestroyReferencePoint: destroyReferencePoint,
};
