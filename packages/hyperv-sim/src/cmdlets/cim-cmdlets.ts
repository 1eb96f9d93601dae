import { readFaults } from '../host/host-files.js';
import type { HostState, VmRecord } from '../host/host-state.js';
import { type DiskTracking, loadRct, rctSeq, tracking } from '../host/rct-log.js';
import { JOB_COMPLETED, JOB_RUNNING, loadJobs, newJob, saveJobs, type WmiJobRecord } from '../host/wmi-jobs.js';
import { CIM_TYPE_NAMES, cimClassOf } from '../objects/cim-types.js';
import { TYPE_NAMES } from '../objects/documented-types.js';
import { typed, typeOf } from '../objects/ps-object.js';
import { PsError } from '../ps-error.js';
import {
  computerSystemView,
  instanceOf,
  jobView,
  keyReference,
  NAMESPACE,
  referencePointViews,
  serviceView,
  settingDataViews,
} from './cim-instances.js';
import { INVALID_PARAMETER, JOB_METHODS, type JobMethod } from './cim-methods.js';
import type { CmdletContext, CmdletHandler } from './context.js';

/**
 * The WMI side of RCT, as `Get-CimInstance`, `Invoke-CimMethod` and `Get-CimAssociatedInstance`
 * reach it in `root\virtualization\v2`. Method names, parameters and return codes follow the docs:
 * - Msvm_ImageManagementService.GetVirtualDiskChanges:
 *   https://learn.microsoft.com/windows/win32/hyperv_v2/msvm-imagemanagementservice-getvirtualdiskchanges
 * - Msvm_VirtualSystemSnapshotService.CreateSnapshot (`CIM_ComputerSystem REF AffectedSystem`) and
 *   ConvertToReferencePoint (`CIM_VirtualSystemSettingData REF AffectedSnapshot`):
 *   https://learn.microsoft.com/windows/win32/hyperv_v2/msvm-virtualsystemsnapshotservice-converttoreferencepoint
 * - Msvm_VirtualSystemReferencePointService.DestroyReferencePoint
 *   (`Msvm_VirtualSystemReferencePoint REF AffectedReferencePoint`):
 *   https://learn.microsoft.com/windows/win32/hyperv_v2/msvm-virtualsystemreferencepointservice-destroyreferencepoint
 * - Msvm_VirtualSystemReferencePoint (InstanceID, ReferencePointType, VirtualSystemIdentifier,
 *   VirtualDiskIdentifiers, ResilientChangeTrackingIdentifiers):
 *   https://learn.microsoft.com/windows/win32/hyperv_v2/msvm-virtualsystemreferencepoint
 * - Jobs: a method that answers 4096 gives a `Msvm_ConcreteJob` reference (…/msvm-concretejob);
 *   its result is reached through `Msvm_AffectedJobElement` (…/msvm-affectedjobelement).
 * Reference parameters take CIM instances; a string there is refused (cim-methods.ts). The three
 * methods above complete at once (ReturnValue 0, the result in the out parameter as a reference
 * holding only its key) unless the host's `wmiJobs` fault makes them answer 4096 with a job that
 * runs for a set number of reads and then completes or fails.
 * Simulator deviations that remain: `SnapshotSettings` is not read (every checkpoint is crash
 * consistent), `GetVirtualDiskChanges` always completes at once, and `Msvm_ComputerSystem` lists
 * only the VMs (not the host's own instance).
 */
/** `GetVirtualDiskChanges` answers for at most this many bytes a call, so callers must loop. */
export const PROCESS_LIMIT = 16 * 2 ** 20;

/** ReturnValue codes from the method docs. */
const OK = 0;
const NOT_FOUND = 32779;

/** The service classes (one instance each). */
const SERVICES = new Set([
  'Msvm_ImageManagementService',
  'Msvm_VirtualSystemSnapshotService',
  'Msvm_VirtualSystemReferencePointService',
]);

const getCimInstance: CmdletHandler = async (c) => {
  const namespace = String(c.arg('Namespace') ?? '');
  const className = String(c.arg('ClassName') ?? '');
  if (namespace.toLowerCase() === NAMESPACE) {
    if (SERVICES.has(className)) return serviceView(className);
    if (className === 'Msvm_VirtualSystemReferencePoint') return referencePointViews(c);
    if (className === 'Msvm_ComputerSystem') return c.state.vms.map(computerSystemView);
    if (className === 'Msvm_VirtualSystemSettingData') return settingDataViews(c.state);
    if (className === 'Msvm_ConcreteJob') return concreteJobs(c);
  }
  throw new PsError(
    'ObjectNotFound',
    `The simulator has no CIM class ${namespace}:${className}.`,
    'HRESULT 0x80041010,Microsoft.Management.Infrastructure.CimCmdlets.GetCimInstanceCommand',
  );
};

/**
 * The host's jobs. Each read of the class is one poll: a running job with reads left stays
 * running; one with none left ends now (does its work and completes, or fails as armed).
 */
async function concreteJobs(c: CmdletContext): Promise<unknown[]> {
  const jobs = await loadJobs(c.root);
  for (const job of jobs) {
    if (job.jobState !== JOB_RUNNING) continue;
    if (job.pollsLeft > 0) job.pollsLeft--;
    else await endJob(c, job);
  }
  await saveJobs(c.root, jobs);
  return jobs.map(jobView);
}

async function endJob(c: CmdletContext, job: WmiJobRecord): Promise<void> {
  if (job.fail) {
    job.jobState = job.fail.jobState ?? 10;
    job.errorCode = job.fail.errorCode ?? 32768;
    job.errorDescription = job.fail.errorDescription ?? `'${job.method}' failed.`;
    return;
  }
  const done = await (JOB_METHODS[job.method] as JobMethod).perform(c, job.target);
  if (typeof done === 'number') {
    job.jobState = 10;
    job.errorCode = done;
    job.errorDescription = `'${job.method}' failed (${done}): what it works on is gone or in the wrong state.`;
    return;
  }
  job.jobState = JOB_COMPLETED;
  job.affected = done;
}

/** The drive a disk path names: a VM drive's live, base or checkpoint-frozen file. */
function diskAt(state: HostState, path: unknown): { vm: VmRecord; drive: number; upTo?: number } | undefined {
  for (const vm of state.vms) {
    for (const [i, d] of vm.drives.entries()) {
      if (d.path === path) return { vm, drive: i };
      const snap = (state.snapshots ?? []).find((s) => s.vmName === vm.name && s.frozen[i] === path);
      if (snap) return { vm, drive: i, upTo: snap.seqs?.[i] ?? 0 };
    }
  }
  return undefined;
}

function changedRanges(t: DiskTracking, from: number, upTo: number, start: number, end: number): [number[], number[]] {
  const ranges = t.changes
    .filter((r) => r.seq > from && r.seq <= upTo)
    .map((r) => [Math.max(r.offset, start), Math.min(r.offset + r.length, end)] as const)
    .filter(([a, b]) => b > a)
    .sort((x, y) => x[0] - y[0]);
  const merged: [number, number][] = [];
  for (const [a, b] of ranges) {
    const last = merged.at(-1);
    if (last && a <= last[1]) last[1] = Math.max(last[1], b);
    else merged.push([a, b]);
  }
  return [merged.map((r) => r[0]), merged.map((r) => r[1] - r[0])];
}

async function getVirtualDiskChanges(c: CmdletContext, a: Record<string, unknown>): Promise<unknown> {
  const found = diskAt(c.state, a.Path);
  if (!found) return diskChanges(NOT_FOUND);
  const rct = await loadRct(c.root);
  const t = tracking(rct, (found.vm.drives[found.drive] as { basePath: string }).basePath);
  const from = rctSeq(t, a.LimitId);
  const offset = Number(a.ByteOffset ?? 0);
  const length = Number(a.ByteLength ?? 0);
  if (from === undefined || !Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || length <= 0) {
    return diskChanges(INVALID_PARAMETER);
  }
  const processed = Math.min(length, PROCESS_LIMIT);
  const [offsets, lengths] = changedRanges(t, from, found.upTo ?? t.seq, offset, offset + processed);
  return diskChanges(OK, { ProcessedByteLength: processed, ChangedByteOffsets: offsets, ChangedByteLengths: lengths });
}

/** GetVirtualDiskChanges' result: `ReturnValue` and its out parameters (null when the call failed). */
function diskChanges(returnValue: number, out: Record<string, unknown> = {}) {
  return typed(TYPE_NAMES.diskChanges, {
    ReturnValue: returnValue,
    ProcessedByteLength: null,
    ChangedByteOffsets: null,
    ChangedByteLengths: null,
    Job: null,
    ...out,
  });
}

/** The result a method writes: ReturnValue and its out parameters (null when not set). */
function methodResult(name: string, m: JobMethod, returnValue: number, out: Record<string, unknown> = {}) {
  const type =
    name === 'CreateSnapshot'
      ? CIM_TYPE_NAMES.createSnapshot
      : name === 'ConvertToReferencePoint'
        ? CIM_TYPE_NAMES.convert
        : CIM_TYPE_NAMES.destroy;
  return typed(type, { ReturnValue: returnValue, ...(m.resultOut ? { [m.resultOut]: null } : {}), Job: null, ...out });
}

async function invokeJobMethod(c: CmdletContext, name: string, m: JobMethod, args: Record<string, unknown>) {
  const target = m.check(c, args);
  if (typeof target === 'number') return methodResult(name, m, target);
  const mode = (await readFaults(c.root)).wmiJobs;
  if (mode && (mode.methods ?? Object.keys(JOB_METHODS)).includes(name)) {
    const job = newJob(name, target, mode);
    const jobs = await loadJobs(c.root);
    jobs.push(job);
    await saveJobs(c.root, jobs);
    return methodResult(name, m, 4096, { Job: keyReference({ className: 'Msvm_ConcreteJob', key: job.instanceId }) });
  }
  const done = await m.perform(c, target);
  if (typeof done === 'number') return methodResult(name, m, done);
  const made = done[0];
  return methodResult(name, m, 0, m.resultOut && made ? { [m.resultOut]: keyReference(made) } : {});
}

/** The service each method belongs to, which its `-InputObject` must be an instance of. */
function checkService(input: unknown, service: string, method: string): void {
  if (cimClassOf(typeOf(input)) === service) return;
  throw new PsError(
    'MetadataError',
    `The method '${method}' is not a method of the -InputObject given (it belongs to ${service}).`,
    'HRESULT 0x80041055,Microsoft.Management.Infrastructure.CimCmdlets.InvokeCimMethodCommand',
  );
}

const invokeCimMethod: CmdletHandler = async (c) => {
  const name = String(c.arg('MethodName') ?? '');
  const args = (c.arg('Arguments') as Record<string, unknown> | undefined) ?? {};
  const method = JOB_METHODS[name];
  if (name === 'GetVirtualDiskChanges') {
    checkService(c.arg('InputObject'), 'Msvm_ImageManagementService', name);
    return getVirtualDiskChanges(c, args);
  }
  if (!method) {
    throw new PsError(
      'MetadataError',
      `The simulator has no CIM method named '${name}'.`,
      'HRESULT 0x80041055,Microsoft.Management.Infrastructure.CimCmdlets.InvokeCimMethodCommand',
    );
  }
  checkService(c.arg('InputObject'), method.service, name);
  return invokeJobMethod(c, name, method, args);
};

/**
 * `Get-CimAssociatedInstance -InputObject <job> -Association Msvm_AffectedJobElement
 * [-ResultClassName <class>]`: the elements a job affected (for a method's job, what it made), as
 * whole instances. Other associations are not simulated.
 */
const getCimAssociatedInstance: CmdletHandler = async (c) => {
  const input = c.arg('InputObject');
  const association = String(c.arg('Association') ?? '');
  const resultClass = c.arg('ResultClassName');
  if (input === null || input === undefined) {
    throw new PsError(
      'InvalidData',
      "Cannot validate argument on parameter 'InputObject'. The argument is null.",
      'ParameterArgumentValidationError,Microsoft.Management.Infrastructure.CimCmdlets.GetCimAssociatedInstanceCommand',
    );
  }
  if (cimClassOf(typeOf(input)) !== 'Msvm_ConcreteJob' || association !== 'Msvm_AffectedJobElement') {
    throw new PsError(
      'NotImplemented',
      'The simulator carries out Get-CimAssociatedInstance only from an Msvm_ConcreteJob through Msvm_AffectedJobElement.',
      'SimulatorUnsupportedScript',
    );
  }
  const id = String((input as Record<string, unknown>).InstanceID ?? '');
  const job = (await loadJobs(c.root)).find((j) => j.instanceId === id);
  const found: unknown[] = [];
  for (const element of job?.affected ?? []) {
    if (resultClass !== undefined && element.className !== resultClass) continue;
    const instance = await instanceOf(c, element);
    if (instance) found.push(instance);
  }
  return found;
};

/** `Get-CimInstance`, `Invoke-CimMethod` and `Get-CimAssociatedInstance` for RCT. */
export const CIM_CMDLETS: Record<string, CmdletHandler> = {
  'Get-CimInstance': getCimInstance,
  'Invoke-CimMethod': invokeCimMethod,
  'Get-CimAssociatedInstance': getCimAssociatedInstance,
};
