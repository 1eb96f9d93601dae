import type { CloneInfo, OperationOptions, PowerState } from '@replikit/core';
import { otherConfig, type XRecord } from '../xen-records.js';
import { REPLICA_NAME_KEY, REPLICA_OF_KEY } from '../xen-replica-keys.js';
import { sig, str, type XenFailoverContext } from './failover-context.js';
import { CLONE_KEY } from './failover-keys.js';

/** What a clone VM's {@link CLONE_KEY} holds. */
export interface CloneMarks {
  replicaId: string;
  pointId: string;
  operationId: string;
  createdAt: string;
  state: 'building' | 'ready';
}

/** The records the clone hooks read, one `get_all_records` per class. */
export interface CloneView {
  vms: Record<string, XRecord>;
  vifs: Record<string, XRecord>;
  networks: Record<string, XRecord>;
}

/** Reads the VMs, VIFs and networks of the pool. */
export async function cloneView(ctx: XenFailoverContext, options?: OperationOptions): Promise<CloneView> {
  const [vms, vifs, networks] = await Promise.all(
    ['VM', 'VIF', 'network'].map((cls) =>
      ctx.connection.call<Record<string, XRecord>>(`${cls}.get_all_records`, [], sig(options)),
    ),
  );
  return { vms: vms!, vifs: vifs!, networks: networks! };
}

/** The clone marks of a VM, if it has readable ones. */
export function cloneMarksOf(vm: XRecord): CloneMarks | undefined {
  const raw = otherConfig(vm)[CLONE_KEY];
  if (raw === undefined) return undefined;
  try {
    const m = JSON.parse(raw) as Partial<CloneMarks>;
    if (typeof m.replicaId !== 'string' || typeof m.pointId !== 'string') return undefined;
    return {
      replicaId: m.replicaId,
      pointId: m.pointId,
      operationId: str(m.operationId),
      createdAt: str(m.createdAt) || new Date(0).toISOString(),
      state: m.state === 'ready' ? 'ready' : 'building',
    };
  } catch {
    return undefined;
  }
}

/**
 * True for what `VM.clone` of one of `replicaVm`'s restore points made before the clone was
 * marked (a crash right after the clone task): a template, no snapshot, carrying the replica's
 * name and source marks it copied from the snapshot. `ensureReplica` never takes it (it skips
 * templates); the clone hooks finish or delete it.
 */
export function isUnmarkedCloneOf(vm: XRecord, replicaVm: XRecord): boolean {
  const c = otherConfig(vm);
  const r = otherConfig(replicaVm);
  return (
    vm.is_a_template === true &&
    vm.is_a_snapshot !== true &&
    c[CLONE_KEY] === undefined &&
    r[REPLICA_NAME_KEY] !== undefined &&
    c[REPLICA_NAME_KEY] === r[REPLICA_NAME_KEY] &&
    c[REPLICA_OF_KEY] === r[REPLICA_OF_KEY]
  );
}

/** The replica VM (ref and record) an unmarked clone was cut from, if any is on the pool. */
export function replicaOfUnmarked(view: CloneView, vm: XRecord): [string, XRecord] | undefined {
  return Object.entries(view.vms).find(
    ([, r]) => r.is_a_template !== true && r.is_a_snapshot !== true && isUnmarkedCloneOf(vm, r),
  );
}

const POWER: Record<string, PowerState> = {
  Running: 'running',
  Halted: 'stopped',
  Paused: 'paused',
  Suspended: 'paused',
};

/** The uuids of the networks a VM's VIFs are on. */
export function networksOf(view: CloneView, vm: XRecord): string[] {
  return ((vm.VIFs as string[] | undefined) ?? [])
    .map((ref) => view.networks[str(view.vifs[ref]?.network)])
    .filter((n): n is XRecord => n !== undefined)
    .map((n) => str(n.uuid));
}

/** The {@link CloneInfo} of a clone VM. */
export function toCloneInfo(view: CloneView, vm: XRecord, marks: Omit<CloneMarks, 'state'>): CloneInfo {
  return {
    id: str(vm.uuid),
    name: str(vm.name_label),
    replicaId: marks.replicaId,
    pointId: marks.pointId,
    operationId: marks.operationId,
    createdAt: marks.createdAt,
    powerState: POWER[str(vm.power_state)] ?? 'unknown',
    networks: networksOf(view, vm),
  };
}

/**
 * See `FailoverHooks.listClones`: the clone VMs (of `replicaId` when given), oldest first, those a
 * crash left unmarked or unfinished included (so that they are found as orphans and deleted).
 */
export async function listClones(
  ctx: XenFailoverContext,
  replicaId?: string,
  options?: OperationOptions,
): Promise<CloneInfo[]> {
  const view = await cloneView(ctx, options);
  const out: CloneInfo[] = [];
  for (const vm of Object.values(view.vms)) {
    if (vm.is_a_snapshot === true || vm.is_control_domain === true) continue;
    const marks = cloneMarksOf(vm);
    if (marks) {
      if (replicaId === undefined || marks.replicaId === replicaId) out.push(toCloneInfo(view, vm, marks));
      continue;
    }
    const replica = vm.is_a_template === true ? replicaOfUnmarked(view, vm) : undefined;
    if (!replica || (replicaId !== undefined && str(replica[1].uuid) !== replicaId)) continue;
    const unknown = {
      replicaId: str(replica[1].uuid),
      pointId: '',
      operationId: '',
      createdAt: new Date(0).toISOString(),
    };
    out.push(toCloneInfo(view, vm, unknown));
  }
  return out.sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.id.localeCompare(b.id));
}
