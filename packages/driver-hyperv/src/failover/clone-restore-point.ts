import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import {
  type CloneInfo,
  type CloneOptions,
  ConflictError,
  NotFoundError,
  type OperationOptions,
  type Replica,
  type RestorePoint,
} from '@replikit/core';
import { type NicRow, powerStateOf, type VmRow } from '../hyperv-records.js';
import { ADD_NIC_DYNAMIC_CONNECTED } from '../scripts/failover-scripts.js';
import { GET_VM, VM_NICS } from '../scripts/hyperv-scripts.js';
import {
  ADD_DRIVE,
  ADD_NIC_DYNAMIC,
  NEW_REPLICA_VM,
  REMOVE_NIC,
  REMOVE_VM,
  SET_REPLICA_VM,
  STOP_VM,
} from '../scripts/target-scripts.js';
import type { NoteRow } from '../target/hyperv-target.js';
import { copyChainToVhdx } from './clone-copy.js';
import { type HyperVFailoverContext, isOff } from './failover-context.js';
import { assertNotFailedOver, type CloneRecord, cloneOf, readFailover } from './failover-files.js';

const CLONE_PREFIX = 'replikit-clone-';
/** Written in a clone's folder before anything else, so a half-made clone is found and swept. */
const CLONE_FILE = 'replikit-clone.json';

/** A clone's folder, beside the replicas: a digest of its name, so no user text becomes a path. */
function cloneDirOf(root: string, name: string): string {
  return join(root, `${CLONE_PREFIX}${createHash('sha256').update(name).digest('hex').slice(0, 20)}`);
}

function toInfo(row: NoteRow, c: CloneRecord['replikitClone']): CloneInfo {
  return {
    id: row.Id.toLowerCase(),
    name: row.Name,
    replicaId: c.replicaId,
    pointId: c.pointId,
    operationId: c.operationId,
    createdAt: c.createdAt,
    powerState: powerStateOf(row.State),
    networks: [...c.networks],
  };
}

/** Turns a VM off and removes it (configuration only; its folder is deleted by the caller). */
async function removeVm(ctx: HyperVFailoverContext, row: NoteRow): Promise<void> {
  if (!isOff(row.State)) await ctx.link.call(STOP_VM, { vm: row.Name });
  await ctx.link.call(REMOVE_VM, { vm: row.Name });
}

/** True when a VM's folder is inside clone folder `dir` (Hyper-V may add the VM's name below it). */
function inside(path: string | null | undefined, dir: string): boolean {
  return typeof path === 'string' && (path === dir || path.startsWith(`${dir}/`) || path.startsWith(`${dir}\\`));
}

/**
 * See `FailoverHooks.cloneRestorePoint`. The clone is an independent VM, as `Export-VMSnapshot`
 * then `Import-VM -Copy -GenerateNewId` makes one: each disk is a new dynamic VHDX holding the
 * point's frozen chain (zero blocks left out), in a folder of its own beside the replicas. A
 * differencing child of the point's frozen file would be cheaper but breaks when retention removes
 * the point (Hyper-V merges a removed checkpoint into that very file) while replication goes on.
 * Then `New-VM` (the replica's generation, memory and processors), one adapter per replica
 * adapter with a MAC of the host's pool (disconnected, or on the mapped test switch), the drives,
 * and last the notes that make it a clone: a VM without them is half made and is rebuilt.
 */
export async function cloneRestorePoint(
  ctx: HyperVFailoverContext,
  replica: Replica,
  point: RestorePoint,
  options: CloneOptions,
): Promise<CloneInfo> {
  const vm = await ctx.target.vm(replica);
  const dir = cloneDirOf(dirname(vm.identity.dir), options.name);
  const wanted = options.name.toLowerCase();
  for (const row of (await ctx.target.noteRows()).filter((r) => r.Name.toLowerCase() === wanted)) {
    const found = cloneOf(row.Notes);
    if (found?.replicaId === replica.id && found.pointId === point.id) return toInfo(row, found);
    if (found || !inside(row.Path, dir)) {
      throw new ConflictError(
        `a VM named '${options.name}' exists and is not a clone of restore point ${point.id} of replica '${replica.id}'; pick another name`,
      );
    }
    await removeVm(ctx, row); // half made by a call that was cut: made again below
  }
  assertNotFailedOver(await readFailover(vm.identity.dir), replica.id);
  const frozen = async (): Promise<string[]> => {
    const at = (await ctx.target.pointCheckpoints(vm)).find((c) => c.Id === point.id);
    if (!at) throw new NotFoundError(`replica '${replica.id}' has no restore point ${point.id}`);
    return at.HardDrives.map((d) => d.Path);
  };
  const createdAt = new Date().toISOString();
  for (let attempt = 0; ; attempt++) {
    const paths = await frozen();
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, CLONE_FILE), JSON.stringify({ name: options.name, replicaId: replica.id }));
    for (const [i, path] of paths.entries()) {
      const image = await ctx.openImage(path);
      try {
        await copyChainToVhdx(image, join(dir, `disk-${i}.vhdx`), options.signal);
      } finally {
        await image.close();
      }
    }
    // Retention may have removed an older point meanwhile (a merge moves the point's files).
    if (JSON.stringify(await frozen()) === JSON.stringify(paths)) break;
    if (attempt >= 2) {
      await rm(dir, { recursive: true, force: true });
      throw new ConflictError(`the files of restore point ${point.id} kept moving while it was cloned; retry`);
    }
  }
  await ctx.faultHook?.('clone:copied');
  const [source] = await ctx.link.call<VmRow>(GET_VM, { id: replica.id });
  if (!source) throw new NotFoundError(`replica '${replica.id}' no longer exists on this Hyper-V host`);
  await ctx.link.call(NEW_REPLICA_VM, {
    name: options.name,
    generation: source.Generation === 2 ? 2 : 1,
    memory: source.MemoryStartup,
    path: dir,
  });
  const made = (await ctx.target.noteRows()).find((r) => r.Name.toLowerCase() === wanted && inside(r.Path, dir));
  if (!made) throw new NotFoundError(`the clone VM '${options.name}' vanished once created`);
  await writeFile(
    join(dir, CLONE_FILE),
    JSON.stringify({ name: options.name, replicaId: replica.id, vmId: made.Id.toLowerCase() }),
  );
  await ctx.faultHook?.('clone:vm-made');
  await ctx.link.call(REMOVE_NIC, { vm: options.name, nic: 'Network Adapter' }).catch(() => undefined);
  const network = options.network ?? { mode: 'isolated' };
  const networks: string[] = [];
  for (const nic of await ctx.link.call<NicRow>(VM_NICS, { vm: vm.row.Name })) {
    const to = network.mode === 'mapped' && nic.SwitchName ? network.map[nic.SwitchName] : undefined;
    if (to !== undefined) {
      await ctx.link.call(ADD_NIC_DYNAMIC_CONNECTED, { vm: options.name, nic: nic.Name, switch: String(to) });
      networks.push(String(to));
    } else {
      await ctx.link.call(ADD_NIC_DYNAMIC, { vm: options.name, nic: nic.Name });
    }
  }
  const disks = (await readdir(dir)).filter((f) => /^disk-\d+\.vhdx$/.test(f)).sort((a, b) => diskNo(a) - diskNo(b));
  for (const file of disks) await ctx.link.call(ADD_DRIVE, { vm: options.name, path: join(dir, file) });
  const record: CloneRecord = {
    replikitClone: {
      replicaId: replica.id,
      pointId: point.id,
      operationId: options.operationId,
      createdAt,
      dir,
      networks,
    },
  };
  await ctx.link.call(SET_REPLICA_VM, {
    name: options.name,
    cpus: Math.max(1, source.ProcessorCount),
    notes: JSON.stringify(record),
  });
  await ctx.faultHook?.('clone:created');
  return toInfo({ ...made, State: 'Off' }, record.replikitClone);
}

function diskNo(file: string): number {
  return Number(/\d+/.exec(file)?.[0] ?? 0);
}

/** See `FailoverHooks.listClones`: the complete clones (of `replicaId` when given), oldest first. */
export async function listClones(ctx: HyperVFailoverContext, replicaId?: string): Promise<CloneInfo[]> {
  const out: CloneInfo[] = [];
  for (const row of await ctx.target.noteRows()) {
    const c = cloneOf(row.Notes);
    if (c && (replicaId === undefined || c.replicaId === replicaId)) out.push(toInfo(row, c));
  }
  return out.sort((a, b) => a.createdAt.localeCompare(b.createdAt));
}

/**
 * See `FailoverHooks.destroyClone`: the clone VM is turned off and removed, then its folder. A
 * clone whose VM is gone already has its folder swept (a call cut before it deleted it); a VM that
 * is no clone is refused with `E_CONFLICT`.
 */
export async function destroyClone(
  ctx: HyperVFailoverContext,
  cloneId: string,
  _options?: OperationOptions,
): Promise<void> {
  const wanted = cloneId.toLowerCase();
  const row = (await ctx.target.noteRows()).find((r) => r.Id.toLowerCase() === wanted);
  if (row) {
    const c = cloneOf(row.Notes);
    const halfMade = !c && typeof row.Path === 'string' && row.Path.includes(CLONE_PREFIX);
    if (!c && !halfMade) {
      throw new ConflictError(`VM '${row.Name}' is not a clone made by a test failover; it is not deleted`, {
        details: { vmId: wanted },
      });
    }
    await removeVm(ctx, row);
    await ctx.faultHook?.('clone:vm-removed');
    if (c) {
      await rm(c.dir, { recursive: true, force: true });
      return;
    }
  }
  await sweep(ctx, wanted);
}

/** Deletes the clone folders that name VM `vmId` (their VM is gone). */
async function sweep(ctx: HyperVFailoverContext, vmId: string): Promise<void> {
  const root = ctx.target.replicaPath;
  if (!root) return;
  for (const entry of await readdir(root).catch(() => [] as string[])) {
    if (!entry.startsWith(CLONE_PREFIX)) continue;
    const text = await readFile(join(root, entry, CLONE_FILE), 'utf8').catch(() => '');
    if (text.includes(`"vmId":${JSON.stringify(vmId)}`)) await rm(join(root, entry), { recursive: true, force: true });
  }
}
