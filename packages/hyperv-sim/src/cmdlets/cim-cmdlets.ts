import { randomUUID } from 'node:crypto';
import type { HostState, SnapshotRecord, VmRecord } from '../host/host-state.js';
import { type DiskTracking, loadRct, rctSeq, saveRct, tracking } from '../host/rct-log.js';
import { TYPE_NAMES } from '../objects/documented-types.js';
import { typed } from '../objects/ps-object.js';
import { PsError } from '../ps-error.js';
import type { CmdletContext, CmdletHandler } from './context.js';
import { mergeCheckpoint, takeCheckpoint } from './snapshot-cmdlets.js';

/**
 * The WMI side of RCT, as `Get-CimInstance` / `Invoke-CimMethod` reach it in
 * `root\virtualization\v2`. Method names, parameters and return codes follow the docs:
 * - Msvm_ImageManagementService.GetVirtualDiskChanges:
 *   https://learn.microsoft.com/windows/win32/hyperv_v2/msvm-imagemanagementservice-getvirtualdiskchanges
 * - Msvm_VirtualSystemSnapshotService.CreateSnapshot / ConvertToReferencePoint:
 *   https://learn.microsoft.com/windows/win32/hyperv_v2/msvm-virtualsystemsnapshotservice-converttoreferencepoint
 * - Msvm_VirtualSystemReferencePointService.DestroyReferencePoint:
 *   https://learn.microsoft.com/windows/win32/hyperv_v2/msvm-virtualsystemreferencepointservice-destroyreferencepoint
 * - Msvm_VirtualSystemReferencePoint (the instances `Get-CimInstance -ClassName` enumerates, with
 *   InstanceID, ReferencePointType, VirtualSystemIdentifier, VirtualDiskIdentifiers and
 *   ResilientChangeTrackingIdentifiers):
 *   https://learn.microsoft.com/windows/win32/hyperv_v2/msvm-virtualsystemreferencepoint
 * Simulator deviation: object arguments (`AffectedSystem`, `AffectedSnapshot`,
 * `AffectedReferencePoint`) are given as the VM's name, the checkpoint's id and the reference
 * point's InstanceID strings instead of CIM instances, and methods complete at once (no jobs).
 */
const NAMESPACE = 'root\\virtualization\\v2';
/** The class whose instances are the host's reference points (enumerated, not a service). */
const REFERENCE_POINT_CLASS = 'Msvm_VirtualSystemReferencePoint';
const CLASSES = new Set([
  'Msvm_ImageManagementService',
  'Msvm_VirtualSystemSnapshotService',
  'Msvm_VirtualSystemReferencePointService',
  REFERENCE_POINT_CLASS,
]);

/** `GetVirtualDiskChanges` answers for at most this many bytes a call, so callers must loop. */
export const PROCESS_LIMIT = 16 * 2 ** 20;

/** ReturnValue codes from the method docs. */
const OK = 0;
const INVALID_PARAMETER = 32773;
const NOT_FOUND = 32779;

const getCimInstance: CmdletHandler = async (c) => {
  const namespace = String(c.arg('Namespace') ?? '');
  const className = String(c.arg('ClassName') ?? '');
  if (namespace.toLowerCase() !== NAMESPACE || !CLASSES.has(className)) {
    throw new PsError(
      'ObjectNotFound',
      `The simulator has no CIM class ${namespace}:${className}.`,
      'HRESULT 0x80041010,Microsoft.Management.Infrastructure.CimCmdlets.GetCimInstanceCommand',
    );
  }
  if (className === REFERENCE_POINT_CLASS) return listReferencePoints(c);
  return { CimClass: `${NAMESPACE}:${className}` };
};

/** Every reference point of the host, as `Msvm_VirtualSystemReferencePoint` instances (RCT-based). */
async function listReferencePoints(c: CmdletContext): Promise<unknown[]> {
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

async function createSnapshot(c: CmdletContext, a: Record<string, unknown>): Promise<unknown> {
  const vm = c.state.vms.find((v) => v.name === a.AffectedSystem);
  if (!vm) return { ReturnValue: INVALID_PARAMETER };
  const type = Number(a.SnapshotType ?? 2);
  const record = await takeCheckpoint(
    c,
    vm,
    `Recovery ${new Date().toISOString()}`,
    type === 32768 ? 'Recovery' : 'Standard',
  );
  return {
    ReturnValue: OK,
    ResultingSnapshot: { Id: record.id, SnapshotType: record.snapshotType, HardDrives: record.frozen },
  };
}

async function convertToReferencePoint(c: CmdletContext, a: Record<string, unknown>): Promise<unknown> {
  const snap = (c.state.snapshots ?? []).find((s) => s.id === a.AffectedSnapshot);
  if (snap?.snapshotType !== 'Recovery') return { ReturnValue: INVALID_PARAMETER };
  const vm = c.state.vms.find((v) => v.name === snap.vmName) as VmRecord;
  const rct = await loadRct(c.root);
  const point = {
    instanceId: `Microsoft:${randomUUID()}`,
    vmName: vm.name,
    disks: vm.drives.map((d) => d.basePath),
    rctIds: vm.drives.map((d, i) => {
      const t = tracking(rct, d.basePath);
      return `rctX:${t.trackingId}:${String(snapSeq(snap, i)).padStart(8, '0')}`;
    }),
  };
  rct.referencePoints.push(point);
  await saveRct(c.root, rct);
  await mergeCheckpoint(c, vm, snap);
  return {
    ReturnValue: OK,
    ResultingReferencePoint: {
      InstanceID: point.instanceId,
      ReferencePointType: 2,
      VirtualDiskIdentifiers: point.disks,
      ResilientChangeTrackingIdentifiers: point.rctIds,
    },
  };
}

function snapSeq(s: SnapshotRecord, drive: number): number {
  return s.seqs?.[drive] ?? 0;
}

async function destroyReferencePoint(c: CmdletContext, a: Record<string, unknown>): Promise<unknown> {
  const rct = await loadRct(c.root);
  const point = rct.referencePoints.find((p) => p.instanceId === a.AffectedReferencePoint);
  if (!point) return { ReturnValue: INVALID_PARAMETER };
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
  return { ReturnValue: OK };
}

const METHODS: Record<string, (c: CmdletContext, a: Record<string, unknown>) => Promise<unknown>> = {
  GetVirtualDiskChanges: getVirtualDiskChanges,
  CreateSnapshot: createSnapshot,
  ConvertToReferencePoint: convertToReferencePoint,
  DestroyReferencePoint: destroyReferencePoint,
};

const invokeCimMethod: CmdletHandler = async (c) => {
  const name = String(c.arg('MethodName') ?? '');
  const method = METHODS[name];
  if (!method) {
    throw new PsError(
      'MetadataError',
      `The simulator has no CIM method named '${name}'.`,
      'HRESULT 0x80041055,Microsoft.Management.Infrastructure.CimCmdlets.InvokeCimMethodCommand',
    );
  }
  return method(c, (c.arg('Arguments') as Record<string, unknown> | undefined) ?? {});
};

/** `Get-CimInstance` and `Invoke-CimMethod` for RCT. */
export const CIM_CMDLETS: Record<string, CmdletHandler> = {
  'Get-CimInstance': getCimInstance,
  'Invoke-CimMethod': invokeCimMethod,
};
