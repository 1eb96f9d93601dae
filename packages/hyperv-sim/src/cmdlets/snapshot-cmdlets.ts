import { randomUUID } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { createVhdx, openVhdx } from '@replikit/formats';
import { findVm, type HostState, type SnapshotRecord, type VmRecord } from '../host/host-state.js';
import { loadRct, saveRct, tracking } from '../host/rct-log.js';
import { rewriteVhdx } from '../host/vhdx-rewrite.js';
import { TYPE_NAMES } from '../objects/documented-types.js';
import { typed } from '../objects/ps-object.js';
import { PsError } from '../ps-error.js';
import type { CmdletContext, CmdletHandler } from './context.js';

function snapshots(state: HostState): SnapshotRecord[] {
  state.snapshots ??= [];
  return state.snapshots;
}

function snapshotView(s: SnapshotRecord, vm: VmRecord) {
  return typed(TYPE_NAMES.snapshot, {
    Id: s.id,
    Name: s.name,
    VMName: vm.name,
    VMId: vm.id,
    SnapshotType: s.snapshotType,
    CreationTime: s.creationTime,
    HardDrives: s.frozen.map((path) => typed(TYPE_NAMES.drive, { Path: path })),
  });
}

function findSnapshot(state: HostState, vm: VmRecord, name: unknown, cmdlet: string): SnapshotRecord {
  const found = snapshots(state).find((s) => s.vmName === vm.name && s.name === String(name));
  if (!found) {
    throw new PsError(
      'ObjectNotFound',
      `Hyper-V was unable to find a checkpoint named "${String(name)}" of virtual machine "${vm.name}".`,
      `InvalidParameter,Microsoft.HyperV.PowerShell.Commands.${cmdlet.replace('-', '')}`,
    );
  }
  return found;
}

/** A new differencing file on top of `parent`, next to it: `<base>_<id>.avhdx`. */
async function newChild(parent: string, id: string): Promise<string> {
  const stem = basename(parent)
    .replace(/\.a?vhdx$/i, '')
    .replace(/_[0-9a-f-]{36}$/, '');
  const child = join(dirname(parent), `${stem}_${id}.avhdx`);
  const reader = await openVhdx(parent);
  try {
    const writer = await createVhdx(child, { size: reader.size, parent: reader, sync: false });
    await writer.close();
  } finally {
    await reader.close();
  }
  return child;
}

/**
 * Takes a checkpoint of every drive of `vm` at once: each live file is frozen and a new `.avhdx`
 * on top of it becomes the live file. Also used by the CIM `CreateSnapshot` (recovery checkpoints).
 */
export async function takeCheckpoint(
  c: CmdletContext,
  vm: VmRecord,
  name: string,
  snapshotType: SnapshotRecord['snapshotType'],
): Promise<SnapshotRecord> {
  const id = randomUUID();
  const frozen = vm.drives.map((d) => d.path);
  const rct = await loadRct(c.root);
  const seqs = vm.drives.map((d) => tracking(rct, d.basePath).seq);
  await saveRct(c.root, rct);
  for (const drive of vm.drives) drive.path = await newChild(drive.path, id);
  const record: SnapshotRecord = {
    id,
    name,
    vmName: vm.name,
    snapshotType,
    frozen,
    seqs,
    creationTime: new Date().toISOString(),
  };
  snapshots(c.state).push(record);
  c.markDirty();
  return record;
}

const checkpointVm: CmdletHandler = async (c: CmdletContext) => {
  const vm = findVm(c.state, c.arg('Name'), 'Checkpoint-VM');
  if (vm.checkpointType === 'Disabled') {
    throw new PsError(
      'InvalidOperation',
      `Checkpoints are disabled for virtual machine "${vm.name}".`,
      'OperationFailed,Microsoft.HyperV.PowerShell.Commands.CheckpointVM',
    );
  }
  const name = String(c.arg('SnapshotName') ?? `${vm.name} - ${new Date().toISOString()}`);
  const record = await takeCheckpoint(c, vm, name, 'Standard');
  return c.has('Passthru') ? snapshotView(record, vm) : null;
};

const getSnapshot: CmdletHandler = async (c) => {
  const vm = findVm(c.state, c.arg('VMName'), 'Get-VMSnapshot');
  let list = snapshots(c.state).filter((s) => s.vmName === vm.name);
  if (c.has('Name')) list = list.filter((s) => s.name === String(c.arg('Name')));
  if (c.has('Id')) list = list.filter((s) => s.id === String(c.arg('Id')));
  if (c.has('SnapshotType')) list = list.filter((s) => s.snapshotType === String(c.arg('SnapshotType')));
  return list.map((s) => snapshotView(s, vm));
};

/** The newest checkpoint of `vm` is the only one whose files are the parents of the live files. */
function requireNewest(state: HostState, vm: VmRecord, s: SnapshotRecord): void {
  const newest = snapshots(state)
    .filter((x) => x.vmName === vm.name)
    .at(-1);
  if (newest !== s) {
    throw new PsError(
      'NotImplemented',
      'The simulator removes or applies only the newest checkpoint of a virtual machine.',
      'SimulatorUnsupported',
    );
  }
}

const removeSnapshot: CmdletHandler = async (c) => {
  const vm = findVm(c.state, c.arg('VMName'), 'Remove-VMSnapshot');
  await mergeCheckpoint(c, vm, findSnapshot(c.state, vm, c.arg('Name'), 'Remove-VMSnapshot'));
  return null;
};

/**
 * Deletes checkpoint `s` of `vm`, merging the files written after it into the files it froze, as
 * Hyper-V merges a deleted checkpoint's differencing disk. For each drive, the file on top of the
 * frozen one (the next checkpoint's frozen file, or the live file) is merged into it and removed;
 * whatever stood on that file (a later checkpoint's file or the live file) is re-linked onto the
 * merged one. The frozen file keeps its path, so a disk's base VHDX stays its identity.
 */
export async function mergeCheckpoint(c: CmdletContext, vm: VmRecord, s: SnapshotRecord): Promise<void> {
  const own = snapshots(c.state).filter((x) => x.vmName === vm.name);
  const at = own.indexOf(s);
  const next = own[at + 1];
  for (const [i, drive] of vm.drives.entries()) {
    const frozen = s.frozen[i] as string;
    // The drive's chain above the frozen file: later checkpoints' files, then the live file.
    const chain = [...own.slice(at + 1).map((x) => x.frozen[i] as string), drive.path];
    const child = chain[0] as string;
    const above = chain.slice(1);
    // Opened before the merge: their chains still name the files as they were. Every file above
    // the removed one is re-linked (rewritten on its new parent), one after the other.
    const aboveReaders = [];
    try {
      for (const path of above) aboveReaders.push(await openVhdx(path));
      const top = await openVhdx(child);
      const old = await openVhdx(frozen);
      try {
        await rewriteVhdx(frozen, top, [old], old.info.parent);
      } finally {
        await top.close();
        await old.close();
      }
      let parent = frozen;
      for (const [k, reader] of aboveReaders.entries()) {
        await rewriteVhdx(above[k] as string, reader, [], parent);
        parent = above[k] as string;
      }
    } finally {
      for (const reader of aboveReaders) await reader.close();
    }
    await rm(child, { force: true });
    if (next) next.frozen[i] = frozen;
    else drive.path = frozen;
  }
  c.state.snapshots = snapshots(c.state).filter((x) => x !== s);
  c.markDirty();
}

const restoreSnapshot: CmdletHandler = async (c) => {
  const vm = findVm(c.state, c.arg('VMName'), 'Restore-VMSnapshot');
  const s = findSnapshot(c.state, vm, c.arg('Name'), 'Restore-VMSnapshot');
  requireNewest(c.state, vm, s);
  if (vm.state === 'Running') {
    throw new PsError('InvalidOperation', `'${vm.name}' must be turned off to apply a checkpoint.`, 'InvalidState');
  }
  for (const [i, drive] of vm.drives.entries()) {
    await rm(drive.path, { force: true });
    drive.path = await newChild(s.frozen[i] as string, s.id);
  }
  vm.state = 'Off';
  c.markDirty();
  return null;
};

const renameSnapshot: CmdletHandler = async (c) => {
  const vm = findVm(c.state, c.arg('VMName'), 'Rename-VMSnapshot');
  const s = findSnapshot(c.state, vm, c.arg('Name'), 'Rename-VMSnapshot');
  const newName = String(c.arg('NewName') ?? '');
  if (newName === '') {
    throw new PsError(
      'InvalidArgument',
      'The NewName parameter is empty.',
      'InvalidParameter,Microsoft.HyperV.PowerShell.Commands.RenameVMSnapshot',
    );
  }
  s.name = newName;
  c.markDirty();
  return c.has('Passthru') ? snapshotView(s, vm) : null;
};

/** The checkpoint cmdlets. */
export const SNAPSHOT_CMDLETS: Record<string, CmdletHandler> = {
  'Checkpoint-VM': checkpointVm,
  'Get-VMSnapshot': getSnapshot,
  'Remove-VMSnapshot': removeSnapshot,
  'Restore-VMSnapshot': restoreSnapshot,
  'Rename-VMSnapshot': renameSnapshot,
};
