import { createHash } from 'node:crypto';
import {
  ConflictError,
  type DiskRef,
  NotFoundError,
  type OperationOptions,
  type Replica,
  type ReplicaFingerprint,
  type ReplicaOwner,
  type ReplicaSpec,
  type RestorePoint,
  StateError,
} from '@replikit/core';
import { RETIRED_KEY } from './failover/failover-keys.js';
import { assertNotFailedOver } from './failover/vm-config.js';
import { xapiCodeOf } from './xapi/xapi-error.js';
import type { XenConnection } from './xapi/xen-connection.js';
import { diskVbds, otherConfig, type PoolView, presentedSize, type XRecord } from './xen-records.js';
import {
  BLOCKED_IN_PROGRESS,
  BLOCKED_READY,
  CBT_BASE_KEY,
  PENDING_OF_KEY,
  PENDING_RUN_KEY,
  REPLICA_BOOT_KEY,
  REPLICA_DISK_KEY,
  REPLICA_JOB_KEY,
  REPLICA_MARK_KEY,
  REPLICA_METHOD_KEY,
  REPLICA_NAME_KEY,
  REPLICA_OF_KEY,
  REPLICA_OWNER_KEY,
  REPLICA_SIZE_KEY,
  REPLICA_VDI_OF_KEY,
  RESTORE_POINT_KEY,
} from './xen-replica-keys.js';

/** Where replicas go and how their networks map; from the job's `target` section. */
export interface XenTargetInit {
  /** Target SR uuid; default the pool's default SR. */
  sr?: string | undefined;
  /** Source network name or uuid → target network uuid. */
  networkMap?: Record<string, string> | undefined;
  /** Called with a warning (unmapped networks). @default `process.emitWarning` */
  onWarning?: ((message: string) => void) | undefined;
}

type Signal = { signal?: AbortSignal };
const sig = (options?: OperationOptions): Signal => (options?.signal ? { signal: options.signal } : {});
const str = (v: unknown): string => (typeof v === 'string' ? v : '');
/**
 * A source MAC as XAPI takes it on `VIF.create` (`aa:bb:cc:dd:ee:ff`), from any usual spelling
 * (Hyper-V's `00155D0A0B0C`, `00-15-5D-…`); `''` (XAPI makes one) when it is not a MAC.
 */
function xapiMac(mac: string | undefined): string {
  const bare = (mac ?? '').replace(/[-:.]/g, '').toLowerCase();
  return /^[0-9a-f]{12}$/.test(bare) ? (bare.match(/../g) ?? []).join(':') : '';
}

/** The XAPI error code of `error`, wrapped (`details.xapiCode`) or not. */
function codeOf(error: unknown): string | undefined {
  const details = (error as { details?: { xapiCode?: unknown } }).details;
  if (typeof details?.xapiCode === 'string') return details.xapiCode;
  return xapiCodeOf((error as { cause?: unknown }).cause ?? error)?.code;
}

/** `20261206T12:00:00Z` (XAPI's datetime) as ISO 8601. */
function isoOf(xapiTime: unknown): string {
  const m = typeof xapiTime === 'string' ? /^(\d{4})(\d{2})(\d{2})T(\d{2}:\d{2}:\d{2})/.exec(xapiTime) : null;
  return m ? `${m[1]}-${m[2]}-${m[3]}T${m[4]}.000Z` : new Date(0).toISOString();
}

/** A run id as the engine makes them (`<job>-<UTC time>-<random>`): the label of a restore point. */
const RUN_LABEL = /^\S+-\d{8}T\d{6}Z-[0-9a-z]+$/;

/**
 * The label of a restore point of replica VM `replicaVm`: its `replikit:restore-point` mark, or,
 * for a point whose marking was cut off (a kill right after `VM.snapshot`, whose task the pool
 * finishes anyway), the name `VM.snapshot` gave it atomically: `<replica name> <run id>`.
 * Undefined for any other snapshot (a user's own is never taken for a point, nor pruned).
 */
function pointLabelOf(replicaVm: XRecord | undefined, snapshot: XRecord): string | undefined {
  const marked = otherConfig(snapshot)[RESTORE_POINT_KEY];
  if (marked !== undefined) return marked;
  const prefix = `${str(replicaVm?.name_label)} `;
  const name = str(snapshot.name_label);
  if (prefix.length < 2 || !name.startsWith(prefix)) return undefined;
  const label = name.slice(prefix.length);
  return RUN_LABEL.test(label) ? label : undefined;
}

const NULL_REF = 'OpaqueRef:NULL';

/**
 * True when a VM's retired mark (see `RETIRED_KEY`) says it was replica `name` (of any source: the
 * name is what a job would write into).
 */
function retiredAs(raw: string, name: string): boolean {
  try {
    const mark = JSON.parse(raw) as { name?: unknown };
    return mark.name === name;
  } catch {
    return false;
  }
}

/** XAPI codes that mean "no CBT here": the fingerprint then leaves CBT out for that disk. */
const CBT_UNSUPPORTED = new Set([
  'SR_OPERATION_NOT_SUPPORTED',
  'VDI_INCOMPATIBLE_TYPE',
  'VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION',
  'MESSAGE_METHOD_UNKNOWN',
]);

/** One replica disk as the fingerprint sees it. */
interface DiskState {
  userdevice: string;
  vdi: string;
  size: string;
  chain: string[];
  changes: string;
}

/** The parts of a replica's fingerprint. */
interface FingerprintParts {
  power: string;
  blocked: Array<[string, string]>;
  bootMark: string;
  startTime: string;
  newestPoint: string;
  disks: DiskState[];
  pending: string[];
}

/**
 * The fingerprint of a replica: a digest of its power state, blocked operations, boot mark and
 * last start time (a boot), its newest restore point, each disk's VDI, size, snapshot chain and
 * CBT changes since that point (an outside write, a resize, a re-chain), and the pending clones
 * (writes of a run not committed).
 */
function replicaFingerprint(parts: FingerprintParts): ReplicaFingerprint {
  const value = createHash('sha256').update(JSON.stringify(parts)).digest('hex');
  return { value, details: { ...parts } };
}

/**
 * The target side of the Xen driver, over XAPI only: the replica VM (created halted with start
 * blocked and marked in `other_config`), its holds and marks, its restore points (snapshots of
 * the replica VM) and its fingerprint. {@link XenDriver} delegates its replica hooks here.
 */
export class XenTarget {
  constructor(
    private readonly connection: XenConnection,
    private readonly init: XenTargetInit = {},
  ) {}

  /** Finds the replica of `spec` by its `other_config` marks, or creates it halted with start blocked. */
  async ensure(spec: ReplicaSpec, options?: OperationOptions): Promise<Replica> {
    const s = sig(options);
    const view = await this.view(options);
    const found = Object.entries(view.vms).find(
      ([, vm]) =>
        vm.is_a_snapshot !== true &&
        vm.is_a_template !== true &&
        otherConfig(vm)[REPLICA_NAME_KEY] === spec.name &&
        otherConfig(vm)[REPLICA_OF_KEY] === spec.source.id,
    );
    const retired = Object.values(view.vms).find((vm) => {
      const raw = otherConfig(vm)[RETIRED_KEY];
      return vm.is_a_snapshot !== true && raw !== undefined && retiredAs(raw, spec.name);
    });
    if (!found && retired) {
      throw new ConflictError(
        `replica '${spec.name}' was failed over permanently: VM ${str(retired.uuid)} is a production VM now and is never overwritten; name another replica`,
        { details: { vmId: str(retired.uuid) } },
      );
    }
    if (found) {
      const sizes = diskVbds(view, found[1]).map(({ vdi }) => presentedSize(vdi));
      const same = sizes.length === spec.disks.length && spec.disks.every((d, i) => sizes[i] === d.size);
      if (!same) {
        throw new ConflictError(
          `replica '${spec.name}' exists with disks of ${sizes.join(', ')} bytes, not ${spec.disks.map((d) => d.size).join(', ')}; delete it or name another replica`,
        );
      }
      return this.toReplica(view, found[0], spec, false);
    }

    const srRef = await this.srRef(options);
    const placement = spec.placement ?? {};
    // The job's target.replicaName names the VM; without one, `<source VM's name>-replica` (the
    // source's name even when the job named the VM by uuid).
    const named = placement.vmName ?? placement.replicaName;
    const name = typeof named === 'string' ? named : `${spec.source.name}-replica`;
    const memory = String(Math.max(1, spec.source.memoryMiB) * 2 ** 20);
    const cpus = String(Math.max(1, spec.source.cpus));
    const vmRef = await this.connection.call<string>(
      'VM.create',
      [
        {
          name_label: name,
          name_description: `replikit replica of VM ${spec.source.id}`,
          VCPUs_max: cpus,
          VCPUs_at_startup: cpus,
          memory_static_max: memory,
          memory_dynamic_max: memory,
          memory_dynamic_min: memory,
          memory_static_min: memory,
          is_a_template: false,
          // Boot as the source does (HVM, BIOS or UEFI firmware).
          HVM_boot_policy: 'BIOS order',
          HVM_boot_params: { order: 'cd', firmware: spec.source.firmware ?? 'bios' },
          // Secure Boot as the source has it, where the source is UEFI and says (else the pool's default).
          ...(spec.source.firmware === 'uefi' && spec.source.secureBoot !== undefined
            ? { platform: { secureboot: String(spec.source.secureBoot) } }
            : {}),
          other_config: {
            [REPLICA_NAME_KEY]: spec.name,
            [REPLICA_OF_KEY]: spec.source.id,
            // The job and method that made it, when the engine says (a direct driver call does not).
            ...(spec.job ? { [REPLICA_JOB_KEY]: spec.job.name, [REPLICA_METHOD_KEY]: spec.job.method } : {}),
            [REPLICA_MARK_KEY]: 'in-progress',
          },
        },
      ],
      s,
    );
    // Start is blocked before the replica has any disk: nothing can boot a half-built VM.
    for (const op of ['start', 'start_on']) {
      await this.connection.call('VM.add_to_blocked_operations', [vmRef, op, BLOCKED_IN_PROGRESS], s);
    }
    for (const [i, disk] of spec.disks.entries()) {
      const vdiRef = await this.connection.callAsync<string>(
        'VDI.create',
        [
          {
            name_label: disk.label ?? `${name} disk ${i}`,
            name_description: `replikit replica of disk ${disk.sourceDiskId}`,
            SR: srRef,
            virtual_size: String(disk.size),
            type: 'user',
            sharable: false,
            read_only: false,
            other_config: { [REPLICA_DISK_KEY]: disk.sourceDiskId, [REPLICA_SIZE_KEY]: String(disk.size) },
          },
        ],
        s,
      );
      await this.enableCbt(vdiRef, options);
      await this.connection.call(
        'VBD.create',
        [
          {
            VM: vmRef,
            VDI: vdiRef,
            userdevice: String(i),
            bootable: i === 0,
            mode: 'RW',
            type: 'Disk',
            empty: false,
            other_config: {},
          },
        ],
        s,
      );
    }
    await this.createVifs(vmRef, spec, options);
    return this.toReplica(await this.view(options), vmRef, spec, true);
  }

  /** Destroys the replica VM, its restore points and all their disks. */
  async delete(replica: Replica, options?: OperationOptions): Promise<void> {
    const s = sig(options);
    const vmRef = await this.vmRef(replica, options);
    await this.dropPending(replica, options);
    await this.dropCbtBases(replica, options);
    const view = await this.view(options);
    for (const point of await this.points(view, vmRef)) await this.destroyVmAndDisks(view, point.ref, options);
    const state = await this.connection.call<string>('VM.get_power_state', [vmRef], s);
    if (state !== 'Halted') await this.connection.callAsync('VM.hard_shutdown', [vmRef], s);
    await this.destroyVmAndDisks(view, vmRef, options);
  }

  /** Takes the hold: `add_to_other_config` fails on an existing key, which makes the claim atomic. */
  async claim(replica: Replica, owner: ReplicaOwner, options?: OperationOptions): Promise<ReplicaOwner> {
    const s = sig(options);
    const vmRef = await this.vmRef(replica, options);
    const record = JSON.stringify(owner);
    assertNotFailedOver(await this.config(replica, options), replica.id);
    try {
      await this.connection.call('VM.add_to_other_config', [vmRef, REPLICA_OWNER_KEY, record], s);
      // A promotion that ended between the check and the hold: give the hold back.
      const now = await this.config(replica, options);
      try {
        assertNotFailedOver(now, replica.id);
      } catch (error) {
        if (now[REPLICA_OWNER_KEY] === record) {
          await this.connection.call('VM.remove_from_other_config', [vmRef, REPLICA_OWNER_KEY], s);
        }
        throw error;
      }
      await this.dropPending(replica, options, owner.runId);
      return owner;
    } catch (error) {
      if (codeOf(error) !== 'MAP_DUPLICATE_KEY') throw error;
    }
    const holder = await this.owner(replica, options);
    if (holder && holder.runId !== owner.runId) return holder;
    // The same run re-takes its hold (a resume): refresh the record.
    await this.connection.call('VM.remove_from_other_config', [vmRef, REPLICA_OWNER_KEY], s);
    await this.connection.call('VM.add_to_other_config', [vmRef, REPLICA_OWNER_KEY, record], s);
    await this.dropPending(replica, options, owner.runId);
    return owner;
  }

  /** Ends the hold of `runId`; nothing when another run (or none) holds the replica. */
  async release(replica: Replica, runId: string, options?: OperationOptions): Promise<void> {
    const holder = await this.owner(replica, options);
    if (holder?.runId !== runId) return;
    await this.dropStrayClones(replica, options); // what a killed step of this run left behind
    const vmRef = await this.vmRef(replica, options);
    await this.connection.call('VM.remove_from_other_config', [vmRef, REPLICA_OWNER_KEY], sig(options));
  }

  /** The run holding the replica, from its `other_config`. */
  async owner(replica: Replica, options?: OperationOptions): Promise<ReplicaOwner | undefined> {
    const config = await this.config(replica, options);
    const raw = config[REPLICA_OWNER_KEY];
    if (raw === undefined) return undefined;
    try {
      return JSON.parse(raw) as ReplicaOwner;
    } catch {
      throw new StateError(`replica '${replica.id}' has an unreadable ${REPLICA_OWNER_KEY}; remove that key by hand`);
    }
  }

  /** Marks the replica; start stays blocked either way, with a reason that says which. */
  async mark(replica: Replica, state: 'in-progress' | 'ready', options?: OperationOptions): Promise<void> {
    const s = sig(options);
    const vmRef = await this.vmRef(replica, options);
    const reason = state === 'in-progress' ? BLOCKED_IN_PROGRESS : BLOCKED_READY;
    // Block first (with the in-progress reason) so no moment exists where an incomplete VM may start.
    for (const op of ['start', 'start_on']) {
      await this.connection.call('VM.remove_from_blocked_operations', [vmRef, op], s);
      await this.connection.call('VM.add_to_blocked_operations', [vmRef, op, reason], s);
    }
    await this.connection.call('VM.remove_from_other_config', [vmRef, REPLICA_MARK_KEY], s);
    await this.connection.call('VM.add_to_other_config', [vmRef, REPLICA_MARK_KEY, state], s);
  }

  /** `in-progress` unless the replica was marked ready (a missing mark is in progress). */
  async markOf(replica: Replica, options?: OperationOptions): Promise<'in-progress' | 'ready'> {
    return (await this.config(replica, options))[REPLICA_MARK_KEY] === 'ready' ? 'ready' : 'in-progress';
  }

  /**
   * The fingerprint (see {@link replicaFingerprint}): what changes when the replica was booted,
   * written outside replikit, resized or re-chained since its newest restore point.
   */
  async state(replica: Replica, options?: OperationOptions): Promise<ReplicaFingerprint> {
    const vmRef = await this.vmRef(replica, options);
    const view = await this.view(options);
    const vm = view.vms[vmRef]!;
    const newest = (await this.points(view, vmRef)).at(-1);
    const pending = (await this.pending(replica, options)).map(({ vdi }) => str(vdi.uuid)).sort();
    return replicaFingerprint({
      power: str(vm.power_state),
      blocked: Object.entries((vm.blocked_operations as Record<string, string>) ?? {}).sort(),
      bootMark: otherConfig(vm)[REPLICA_BOOT_KEY] ?? '',
      startTime: await this.startTime(vm, options),
      newestPoint: newest ? str(newest.vm.uuid) : '',
      disks: await this.diskStates(view, vm, newest?.vm, options),
      pending,
    });
  }

  /** Per disk: its VDI, size, snapshot chain and what CBT says changed since the newest point. */
  private async diskStates(
    view: PoolView,
    vm: XRecord,
    point: XRecord | undefined,
    options?: OperationOptions,
  ): Promise<DiskState[]> {
    const saved = new Map<string, { vdiRef: string; vdi: XRecord }>(
      (point ? diskVbds(view, point) : []).map((d) => [str(d.vbd.userdevice), d]),
    );
    // A disk reverted since that point is compared with the CBT base taken at the revert.
    const prefix = `${str(vm.uuid)}/`;
    for (const [vdiRef, vdi] of Object.entries(view.vdis)) {
      const of = otherConfig(vdi)[CBT_BASE_KEY];
      if (of?.startsWith(prefix)) saved.set(of.slice(prefix.length), { vdiRef, vdi });
    }
    const out: DiskState[] = [];
    for (const { vbd, vdiRef, vdi } of diskVbds(view, vm)) {
      const from = saved.get(str(vbd.userdevice));
      const chain = ((vdi.snapshots as string[] | undefined) ?? []).map((r) => str(view.vdis[r]?.uuid)).sort();
      out.push({
        userdevice: str(vbd.userdevice),
        vdi: str(vdi.uuid),
        size: String(vdi.virtual_size),
        chain,
        changes: await this.changesSince(from?.vdiRef, from?.vdi, vdiRef, vdi, options),
      });
    }
    return out;
  }

  /**
   * What CBT says changed on the live VDI since the point's snapshot VDI: `clean` (no bit set),
   * `changed:<digest of the bitmap>`, `untracked` (CBT off on either, or no point), or
   * `broken:<XAPI code>` (a reset or cut chain, or the VDI in use).
   */
  private async changesSince(
    fromRef: string | undefined,
    from: XRecord | undefined,
    toRef: string,
    to: XRecord,
    options?: OperationOptions,
  ): Promise<string> {
    if (!fromRef || from?.cbt_enabled !== true || to.cbt_enabled !== true) return 'untracked';
    let bitmap: string;
    try {
      // A running replica's disk is attached: XAPI answers VDI_IN_USE, and that answer is the
      // fingerprint's (a boot already changes it), not a transient worth retrying for seconds.
      bitmap = await this.connection.call<string>('VDI.list_changed_blocks', [fromRef, toRef], {
        ...sig(options),
        retryInUse: false,
      });
    } catch (error) {
      const code = codeOf(error);
      if (code === undefined || options?.signal?.aborted) throw error;
      return `broken:${code}`;
    }
    const bits = Buffer.from(bitmap, 'base64');
    if (bits.every((b) => b === 0)) return 'clean';
    return `changed:${createHash('sha256').update(bits).digest('hex')}`;
  }

  /** The VM's last start time from its metrics (a real pool keeps it; empty when there are none). */
  private async startTime(vm: XRecord, options?: OperationOptions): Promise<string> {
    const metrics = str(vm.metrics);
    if (!metrics || metrics === NULL_REF) return '';
    try {
      return String(await this.connection.call('VM_metrics.get_start_time', [metrics], sig(options)));
    } catch (error) {
      if (codeOf(error) === undefined || options?.signal?.aborted) throw error;
      return '';
    }
  }

  /**
   * After a revert, the reverted disk's CBT log is chained to no restore point: a snapshot of it,
   * kept as CBT metadata only (`VDI.data_destroy`) and tagged {@link CBT_BASE_KEY}, is the base
   * the fingerprint compares with until the next restore point. Nothing when CBT is off there.
   */
  private async markCbtBase(
    replica: Replica,
    userdevice: string,
    vdiRef: string,
    options?: OperationOptions,
  ): Promise<void> {
    const s = sig(options);
    if ((await this.connection.call<XRecord>('VDI.get_record', [vdiRef], s)).cbt_enabled !== true) return;
    const base = await this.connection.callAsync<string>('VDI.snapshot', [vdiRef, {}], s);
    await this.connection.call('VDI.remove_from_other_config', [base, CBT_BASE_KEY], s);
    await this.connection.call('VDI.add_to_other_config', [base, CBT_BASE_KEY, `${replica.id}/${userdevice}`], s);
    await this.connection.callAsync('VDI.data_destroy', [base], s);
  }

  /** Destroys the replica's CBT bases (see {@link markCbtBase}). */
  private async dropCbtBases(replica: Replica, options?: OperationOptions): Promise<void> {
    const prefix = `${replica.id}/`;
    for (const [ref, vdi] of Object.entries(await this.vdis(options))) {
      if (otherConfig(vdi)[CBT_BASE_KEY]?.startsWith(prefix)) {
        await this.connection.callAsync('VDI.destroy', [ref], sig(options));
      }
    }
  }

  /**
   * Turns CBT on for a replica disk (a new, cloned or swapped-in VDI), so that the fingerprint
   * can see writes made after the next restore point. An SR or VDI without CBT support leaves
   * that part of the fingerprint `untracked`.
   */
  private async enableCbt(vdiRef: string, options?: OperationOptions): Promise<void> {
    try {
      await this.connection.callAsync('VDI.enable_cbt', [vdiRef], sig(options));
    } catch (error) {
      const code = codeOf(error);
      if (code === undefined || !CBT_UNSUPPORTED.has(code) || options?.signal?.aborted) throw error;
    }
  }

  /** Snapshots the replica VM as restore point `label`. */
  async createPoint(replica: Replica, label: string, options?: OperationOptions): Promise<RestorePoint> {
    const s = sig(options);
    const vmRef = await this.vmRef(replica, options);
    await this.commitPending(replica, options);
    await this.tagDisks(replica, options); // the point's disks inherit the tag: found if left alone
    await this.dropCbtBases(replica, options); // the new point is the base from here
    // A commit resumed after a kill that came after its snapshot: that snapshot is the point.
    const before = await this.view(options);
    const taken = (await this.points(before, vmRef)).find((p) => pointLabelOf(before.vms[vmRef], p.vm) === label);
    const snapRef =
      taken?.ref ?? (await this.connection.callAsync<string>('VM.snapshot', [vmRef, `${replica.name} ${label}`], s));
    if (otherConfig(taken?.vm ?? {})[RESTORE_POINT_KEY] === undefined) {
      await this.connection.call('VM.add_to_other_config', [snapRef, RESTORE_POINT_KEY, label], s);
    }
    const view = await this.view(options);
    return this.toPoint(replica, view.vms[snapRef]!, label);
  }

  /** The replica's restore points, oldest first. */
  async listPoints(replica: Replica, options?: OperationOptions): Promise<RestorePoint[]> {
    const vmRef = await this.vmRef(replica, options);
    const view = await this.view(options);
    return (await this.points(view, vmRef)).map((p) =>
      this.toPoint(replica, p.vm, pointLabelOf(view.vms[vmRef], p.vm)),
    );
  }

  /** Deletes one restore point and its disks. */
  async deletePoint(replica: Replica, point: RestorePoint, options?: OperationOptions): Promise<void> {
    const vmRef = await this.vmRef(replica, options);
    const view = await this.view(options);
    const found = (await this.points(view, vmRef)).find((p) => str(p.vm.uuid) === point.id);
    if (found) await this.destroyVmAndDisks(view, found.ref, options);
  }

  /**
   * Returns the replica to `point`: the points made after it are deleted, and each disk is
   * replaced by a clone of the point's disk at the same `userdevice` (what `VM.revert` does on a
   * pool), the old disk destroyed. The replica halts.
   */
  async revert(replica: Replica, point: RestorePoint, options?: OperationOptions): Promise<void> {
    const s = sig(options);
    const vmRef = await this.vmRef(replica, options);
    const view = await this.view(options);
    const points = await this.points(view, vmRef);
    const at = points.findIndex((p) => str(p.vm.uuid) === point.id);
    const found = points[at];
    if (!found) throw new NotFoundError(`replica '${replica.id}' has no restore point '${point.id}'`);
    await this.dropPending(replica, options);
    await this.dropCbtBases(replica, options);
    // The points after it are versions the replica no longer descends from: they go first, so a
    // crash midway leaves `point` the newest and the revert can simply be asked again.
    for (const newer of points.slice(at + 1).reverse()) await this.destroyVmAndDisks(view, newer.ref, options);
    const state = await this.connection.call<string>('VM.get_power_state', [vmRef], s);
    if (state !== 'Halted') await this.connection.callAsync('VM.hard_shutdown', [vmRef], s);
    const saved = new Map(diskVbds(view, found.vm).map((d) => [str(d.vbd.userdevice), d]));
    for (const { vbd, vdiRef, vdi } of diskVbds(view, view.vms[vmRef]!)) {
      const from = saved.get(str(vbd.userdevice));
      if (!from) continue;
      const clone = await this.connection.callAsync<string>('VDI.clone', [from.vdiRef, {}], s);
      await this.connection.call('VDI.set_name_label', [clone, str(vdi.name_label)], s);
      const vbdRef = Object.entries(view.vbds).find(([, r]) => r === vbd)![0];
      await this.connection.call('VBD.destroy', [vbdRef], s);
      await this.connection.call(
        'VBD.create',
        [
          {
            VM: vmRef,
            VDI: clone,
            userdevice: str(vbd.userdevice),
            bootable: vbd.bootable === true,
            mode: 'RW',
            type: 'Disk',
            empty: false,
            other_config: {},
          },
        ],
        s,
      );
      await this.enableCbt(clone, options);
      await this.connection.callAsync('VDI.destroy', [vdiRef], s);
      await this.markCbtBase(replica, str(vbd.userdevice), clone, options);
    }
    // A restore point is a complete version: the replica is ready again.
    await this.mark(replica, 'ready', options);
  }

  /**
   * The VDI a writer of `disk` writes: the pending clone of the replica disk for `runId`, made
   * (by `VDI.clone` of the committed disk) when there is none; a clone pending from another run is
   * destroyed first, never continued. Returns the clone's ref.
   */
  async pendingVdi(replica: Replica, disk: DiskRef, runId: string | undefined, options?: OperationOptions) {
    const s = sig(options);
    const run = runId ?? '';
    const known = replica.disks.find((d) => d.id === disk.id);
    if (!known) throw new NotFoundError(`replica '${replica.id}' has no disk '${disk.id}'`);
    assertNotFailedOver(await this.config(replica, options), replica.id);
    const holder = await this.owner(replica, options);
    if (holder && holder.runId !== runId) {
      throw new ConflictError(`replica '${replica.id}' is held by run '${holder.runId}'; wait for it or resume it`);
    }
    const userdevice = String(known.meta?.userdevice ?? '');
    const committed = await this.committedVdi(replica, userdevice, options);
    const key = `${replica.id}/${userdevice}`;
    const vdis = await this.vdis(options);
    for (const [ref, vdi] of Object.entries(vdis)) {
      if (otherConfig(vdi)[PENDING_OF_KEY] !== key) continue;
      if (otherConfig(vdi)[PENDING_RUN_KEY] === run && run !== '') return ref;
      if (ref === committed) continue; // swapped in by a cut commit (see dropPending)
      await this.connection.callAsync('VDI.destroy', [ref], s);
    }
    // The clone inherits this tag: if the process dies before the pending tags below, the clone
    // is still known as this disk's (dropStrayClones destroys it).
    const tagged = otherConfig(vdis[committed] ?? {})[REPLICA_VDI_OF_KEY];
    if (tagged !== key) {
      if (tagged !== undefined)
        await this.connection.call('VDI.remove_from_other_config', [committed, REPLICA_VDI_OF_KEY], s);
      await this.connection.call('VDI.add_to_other_config', [committed, REPLICA_VDI_OF_KEY, key], s);
    }
    await this.dropStrayClones(replica, options, userdevice); // this disk's only: others may be cloning now
    const clone = await this.connection.callAsync<string>('VDI.clone', [committed, {}], s);
    await this.connection.call('VDI.remove_from_other_config', [clone, PENDING_OF_KEY], s);
    await this.connection.call('VDI.remove_from_other_config', [clone, PENDING_RUN_KEY], s);
    await this.connection.call('VDI.add_to_other_config', [clone, PENDING_OF_KEY, key], s);
    await this.connection.call('VDI.add_to_other_config', [clone, PENDING_RUN_KEY, run], s);
    return clone;
  }

  /** The committed VDI of the replica disk at `userdevice` (what a reader of the replica sees). */
  async committedVdi(
    replica: Replica,
    userdevice: string,
    options?: OperationOptions,
    diskId?: string,
  ): Promise<string> {
    const vmRef = await this.vmRef(replica, options);
    const view = await this.view(options);
    const vm = view.vms[vmRef]!;
    if (otherConfig(vm)[REPLICA_NAME_KEY] === undefined) throw new NotFoundError(`VM '${replica.id}' is no replica`);
    const at = diskVbds(view, vm).find((d) => str(d.vbd.userdevice) === userdevice);
    if (!at) throw new NotFoundError(`replica '${replica.id}' has no disk at device ${userdevice}`);
    if (diskId !== undefined && otherConfig(at.vdi)[REPLICA_DISK_KEY] !== diskId) {
      throw new NotFoundError(`replica '${replica.id}' has no disk '${diskId}'`);
    }
    return at.vdiRef;
  }

  /** True when a clone is pending for the replica. */
  async hasPending(replica: Replica, options?: OperationOptions): Promise<boolean> {
    return (await this.pending(replica, options)).length > 0;
  }

  /**
   * Destroys the pending clones of the replica (all, or those not of `keepRun`), and the clones
   * a killed writer left before tagging them (see {@link XenTarget.dropStrayClones}).
   */
  async dropPending(replica: Replica, options?: OperationOptions, keepRun?: string): Promise<void> {
    const view = await this.view(options);
    const vm = view.vms[await this.vmRef(replica, options)];
    const disks = new Set(vm ? diskVbds(view, vm).map((d) => d.vdiRef) : []);
    for (const { ref, vdi } of await this.pending(replica, options)) {
      if (keepRun !== undefined && otherConfig(vdi)[PENDING_RUN_KEY] === keepRun) continue;
      // Swapped in by a commit that was cut: it is the replica's disk now. A revert replaces it,
      // a commit asked again finishes it.
      if (disks.has(ref)) continue;
      await this.connection.callAsync('VDI.destroy', [ref], sig(options));
    }
    await this.dropStrayClones(replica, options);
  }

  /** Tags each disk of the replica VM with {@link REPLICA_VDI_OF_KEY} where it is missing. */
  private async tagDisks(replica: Replica, options?: OperationOptions): Promise<void> {
    const view = await this.view(options);
    for (const { vbd, vdi, vdiRef } of diskVbds(view, view.vms[await this.vmRef(replica, options)]!)) {
      const key = `${replica.id}/${str(vbd.userdevice)}`;
      const tagged = otherConfig(vdi)[REPLICA_VDI_OF_KEY];
      if (tagged === key) continue;
      if (tagged !== undefined) {
        await this.connection.call('VDI.remove_from_other_config', [vdiRef, REPLICA_VDI_OF_KEY], sig(options));
      }
      await this.connection.call('VDI.add_to_other_config', [vdiRef, REPLICA_VDI_OF_KEY, key], sig(options));
    }
  }

  /**
   * Destroys the replica's VDIs that nothing uses: clones neither pending nor attached (a process killed
   * between `VDI.clone` and the clone's pending tags leaves one. Only at a device where the
   * replica VM has its disk: a commit killed between `VBD.destroy` and `VBD.create` leaves the
   * old disk unattached too, and that one is kept. Also the disks of a restore point whose VM a
   * cut prune destroyed (snapshots without a VBD; CBT bases excepted). With `userdevice`, only
   * that disk's.
   */
  private async dropStrayClones(replica: Replica, options?: OperationOptions, userdevice?: string): Promise<void> {
    const vmRef = await this.vmRef(replica, options);
    const view = await this.view(options);
    const attached = new Set(diskVbds(view, view.vms[vmRef]!).map((d) => str(d.vbd.userdevice)));
    const prefix = `${replica.id}/`;
    for (const [ref, vdi] of Object.entries(await this.vdis(options))) {
      const config = otherConfig(vdi);
      const of = config[REPLICA_VDI_OF_KEY];
      if (of === undefined || !of.startsWith(prefix)) continue;
      const device = of.slice(prefix.length);
      if (!attached.has(device) || (userdevice !== undefined && device !== userdevice)) continue;
      if (config[PENDING_OF_KEY] !== undefined || config[CBT_BASE_KEY] !== undefined) continue;
      if (((vdi.VBDs as string[] | undefined) ?? []).length > 0) continue;
      await this.connection.callAsync('VDI.destroy', [ref], sig(options));
    }
  }

  /**
   * Swaps each pending clone in at its `userdevice` and destroys the disk it replaces. Asked again
   * after a cut (a killed engine), a clone already swapped in keeps its VBD, and the replaced disks
   * the cut left unattached are destroyed at the end.
   */
  private async commitPending(replica: Replica, options?: OperationOptions): Promise<void> {
    const s = sig(options);
    const vmRef = await this.vmRef(replica, options);
    const view = await this.view(options);
    const current = diskVbds(view, view.vms[vmRef]!);
    for (const { ref, vdi } of await this.pending(replica, options)) {
      const userdevice = otherConfig(vdi)[PENDING_OF_KEY]!.split('/')[1]!;
      const found = current.find((d) => str(d.vbd.userdevice) === userdevice);
      const swapped = found?.vdiRef === ref;
      const old = swapped ? undefined : found;
      if (old) {
        const vbdRef = Object.entries(view.vbds).find(([, r]) => r === old.vbd)![0];
        await this.connection.call('VBD.destroy', [vbdRef], s);
      }
      if (!swapped) {
        await this.connection.call(
          'VBD.create',
          [
            {
              VM: vmRef,
              VDI: ref,
              userdevice,
              bootable: userdevice === '0',
              mode: 'RW',
              type: 'Disk',
              empty: false,
              other_config: {},
            },
          ],
          s,
        );
      }
      await this.connection.call('VDI.remove_from_other_config', [ref, PENDING_OF_KEY], s);
      await this.connection.call('VDI.remove_from_other_config', [ref, PENDING_RUN_KEY], s);
      // A clone starts without CBT: a fresh log from here, before the restore point's snapshot
      // takes it, so replikit's own writes are behind the point and never look like outside ones.
      await this.enableCbt(ref, options);
      if (old) await this.connection.callAsync('VDI.destroy', [old.vdiRef], s);
    }
    await this.dropStrayClones(replica, options);
  }

  private async pending(replica: Replica, options?: OperationOptions): Promise<Array<{ ref: string; vdi: XRecord }>> {
    const prefix = `${replica.id}/`;
    return Object.entries(await this.vdis(options))
      .filter(([, vdi]) => otherConfig(vdi)[PENDING_OF_KEY]?.startsWith(prefix) === true)
      .map(([ref, vdi]) => ({ ref, vdi }));
  }

  private vdis(options?: OperationOptions): Promise<Record<string, XRecord>> {
    return this.connection.call<Record<string, XRecord>>('VDI.get_all_records', [], sig(options));
  }

  /**
   * Lets a ready replica start (a test boot or a failover asked of replikit): its start block is
   * lifted and the boot is marked in `other_config` (a part of the fingerprint). The next
   * `markReplica` blocks start again.
   */
  async unblockReady(vmRef: string, options?: OperationOptions): Promise<void> {
    const s = sig(options);
    const config = await this.connection.call<Record<string, string>>('VM.get_other_config', [vmRef], s);
    if (config[REPLICA_NAME_KEY] === undefined || config[REPLICA_MARK_KEY] !== 'ready') return;
    await this.connection.call('VM.remove_from_other_config', [vmRef, REPLICA_BOOT_KEY], s);
    await this.connection.call('VM.add_to_other_config', [vmRef, REPLICA_BOOT_KEY, new Date().toISOString()], s);
    for (const op of ['start', 'start_on']) {
      await this.connection.call('VM.remove_from_blocked_operations', [vmRef, op], s);
    }
  }

  /** True when `vmId` is a replica marked in progress. */
  async inProgress(vmRef: string, options?: OperationOptions): Promise<boolean> {
    const config = await this.connection.call<Record<string, string>>('VM.get_other_config', [vmRef], sig(options));
    return config[REPLICA_NAME_KEY] !== undefined && config[REPLICA_MARK_KEY] !== 'ready';
  }

  // ── helpers ─────────────────────────────────────────────────────────────────────────────────

  private async createVifs(vmRef: string, spec: ReplicaSpec, options?: OperationOptions): Promise<void> {
    const s = sig(options);
    const map = this.init.networkMap ?? {};
    const networks = await this.connection.call<Record<string, XRecord>>('network.get_all_records', [], s);
    const byUuid = new Map(Object.entries(networks).map(([ref, n]) => [str(n.uuid), ref]));
    const unmapped: string[] = [];
    let unconnected = 0;
    for (const [i, source] of (spec.source.networks ?? []).entries()) {
      // An adapter of a source on no network at all (a Hyper-V adapter on no switch): nothing to map.
      if (source === '') {
        unconnected++;
        continue;
      }
      // A network the job maps goes where the map says; one the map leaves out but this pool has
      // (a replica on the source's own pool) stays on it.
      const target = map[source] ?? (byUuid.has(source) ? source : undefined);
      const netRef = target === undefined ? undefined : byUuid.get(target);
      if (!netRef) {
        unmapped.push(source);
        continue;
      }
      // The source's MAC, so a failed-over replica keeps its addresses; XAPI makes one when ''.
      const mac = xapiMac(spec.source.macs?.[i]);
      await this.connection.call(
        'VIF.create',
        [
          {
            VM: vmRef,
            network: netRef,
            device: String(i),
            MAC: mac,
            MTU: '1500',
            other_config: {},
          },
        ],
        s,
      );
    }
    const warn =
      this.init.onWarning ?? ((m: string) => process.emitWarning(m, { code: 'REPLIKIT_XEN_NETWORK_UNMAPPED' }));
    if (unmapped.length > 0) {
      warn(
        `replica '${spec.name}': no VIF for source networks ${unmapped.map((n) => `'${n}'`).join(', ')}; add them to networkMap`,
      );
    }
    if (unconnected > 0) {
      const adapters =
        unconnected === 1
          ? '1 source adapter connected to no network has'
          : `${unconnected} source adapters connected to no network have`;
      warn(`replica '${spec.name}': ${adapters} no VIF; connect it on the source, or add a VIF to the replica by hand`);
    }
  }

  private async srRef(options?: OperationOptions): Promise<string> {
    const s = sig(options);
    if (this.init.sr) return this.connection.call<string>('SR.get_by_uuid', [this.init.sr], s);
    const [pool] = await this.connection.call<string[]>('pool.get_all', [], s);
    const sr = pool ? await this.connection.call<string>('pool.get_default_SR', [pool], s) : '';
    if (!sr || sr === 'OpaqueRef:NULL') {
      throw new NotFoundError('the pool has no default SR; set the target `sr` of the job');
    }
    return sr;
  }

  private async vmRef(replica: Replica, options?: OperationOptions): Promise<string> {
    try {
      return await this.connection.call<string>('VM.get_by_uuid', [replica.id], sig(options));
    } catch (error) {
      if ((error as { code?: string }).code === 'E_NOT_FOUND') {
        throw new NotFoundError(`replica '${replica.id}' no longer exists on this pool`);
      }
      throw error;
    }
  }

  private async config(replica: Replica, options?: OperationOptions): Promise<Record<string, string>> {
    const vmRef = await this.vmRef(replica, options);
    return this.connection.call<Record<string, string>>('VM.get_other_config', [vmRef], sig(options));
  }

  private async view(options?: OperationOptions): Promise<PoolView> {
    const s = sig(options);
    const [vms, vbds, vdis] = await Promise.all(
      ['VM', 'VBD', 'VDI'].map((cls) => this.connection.call<Record<string, XRecord>>(`${cls}.get_all_records`, [], s)),
    );
    return { vms: vms!, vbds: vbds!, vdis: vdis! };
  }

  /** The replica's restore points (snapshot VMs carrying the label key), oldest first. */
  private async points(view: PoolView, vmRef: string): Promise<Array<{ ref: string; vm: XRecord }>> {
    const replicaVm = view.vms[vmRef];
    return ((replicaVm?.snapshots as string[] | undefined) ?? [])
      .map((ref) => ({ ref, vm: view.vms[ref]! }))
      .filter((p) => p.vm !== undefined && pointLabelOf(replicaVm, p.vm) !== undefined)
      .sort((a, b) => str(a.vm.snapshot_time).localeCompare(str(b.vm.snapshot_time)));
  }

  private async destroyVmAndDisks(view: PoolView, vmRef: string, options?: OperationOptions): Promise<void> {
    const s = sig(options);
    const disks = view.vms[vmRef] ? diskVbds(view, view.vms[vmRef]!) : [];
    await this.connection.callAsync('VM.destroy', [vmRef], s);
    for (const { vdiRef } of disks) await this.connection.callAsync('VDI.destroy', [vdiRef], s);
  }

  private toPoint(replica: Replica, snap: XRecord, label?: string): RestorePoint {
    return {
      id: str(snap.uuid),
      replicaId: replica.id,
      label: label ?? otherConfig(snap)[RESTORE_POINT_KEY] ?? '',
      createdAt: isoOf(snap.snapshot_time),
    };
  }

  /**
   * The {@link Replica}: disk ids are the source disk ids (stable across a revert, which swaps
   * the VDIs); `meta.userdevice` says which VBD holds each.
   */
  private toReplica(view: PoolView, vmRef: string, spec: ReplicaSpec, created: boolean): Replica {
    const vm = view.vms[vmRef]!;
    const id = str(vm.uuid);
    const disks: DiskRef[] = spec.disks.map((d, i) => ({
      id: d.sourceDiskId,
      vmId: id,
      size: d.size, // the source's size: the SR may have rounded the VDI up; nothing reads past it
      ...(d.label !== undefined ? { label: d.label } : {}),
      meta: { userdevice: String(i) },
    }));
    return { id, name: spec.name, disks, created, meta: { vm: str(vm.name_label) } };
  }
}
