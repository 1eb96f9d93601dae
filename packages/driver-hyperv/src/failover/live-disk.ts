import { randomUUID } from 'node:crypto';
import { readdir, rename, rm } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import {
  ConflictError,
  type Extent,
  FailedOverError,
  type LiveDisk,
  NotFoundError,
  type Replica,
} from '@replikit/core';
import { createVhdx, openVhdx, type VhdxReader, type VhdxWriter } from '@replikit/formats';
import { slotId, type VmRow } from '../hyperv-records.js';
import { ReferencePointStore } from '../rct/reference-points.js';
import { GET_VM, LIST_VMS } from '../scripts/hyperv-scripts.js';
import { type HyperVFailoverContext, type HyperVFailoverFaultHook, isOff } from './failover-context.js';
import { readFailover } from './failover-files.js';

/** The extents a VHDX file holds itself (see `VhdxReader.ownExtents`). */
async function ownExtents(reader: VhdxReader): Promise<Extent[]> {
  const out: Extent[] = [];
  for await (const e of reader.ownExtents()) out.push(e);
  return out;
}

/**
 * What was written on the live file at `livePath` since it was made over `parentPath`: the
 * extents it holds itself (to the sector), or `undefined` when it is no child of that file.
 */
export async function writtenOver(livePath: string, parentPath: string): Promise<Extent[] | undefined> {
  const reader = await openVhdx(livePath);
  try {
    const parent = reader.parent?.info.path ?? reader.info.parent;
    if (!parent || resolve(parent) !== resolve(parentPath)) return undefined;
    return await ownExtents(reader);
  } finally {
    await reader.close();
  }
}

/**
 * See `FailoverHooks.promotedChanges`. Promotion applied the point's checkpoint, so each live
 * file is a fresh differencing VHDX over the point's frozen file, and the blocks it holds are
 * exactly what the guest wrote since (to the sector: a block's sector bitmap says which). When the live file is no child of
 * the point's file any more (a checkpoint of the promoted VM was taken), the driver cannot tell.
 */
export async function promotedChanges(
  ctx: HyperVFailoverContext,
  replica: Replica,
  diskId: string,
): Promise<Extent[] | undefined> {
  const vm = await ctx.target.vm(replica);
  const f = await readFailover(vm.identity.dir);
  if (!f || f.state === 'promoting') {
    throw new FailedOverError(`replica '${replica.id}' is not failed over; it has no changes since a promotion`, {
      details: { state: f?.state ?? 'replica' },
    });
  }
  const index = vm.identity.disks.indexOf(diskId);
  if (index < 0) throw new NotFoundError(`replica '${replica.id}' has no disk '${diskId}'`);
  const point = (await ctx.target.checkpoints(vm)).find((c) => c.Id === f.pointId);
  const live = (await ctx.target.drives(vm.row.Name))[index]?.Path;
  const frozen = point?.HardDrives[index]?.Path;
  if (!live || !frozen) return undefined;
  return writtenOver(live, frozen);
}

/** A VM row by id or name. */
async function vmRow(ctx: HyperVFailoverContext, vmId: string): Promise<VmRow> {
  const byId = await ctx.link.call<VmRow>(GET_VM, { id: vmId }).catch(() => [] as VmRow[]);
  const row = byId[0] ?? (await ctx.link.call<VmRow>(LIST_VMS)).find((r) => r.Name === vmId);
  if (!row) throw new NotFoundError(`no VM '${vmId}' on this Hyper-V host; list VMs to see what exists`);
  return row;
}

/** The start of the names of the new files that replace the live file `path` (see {@link LiveFileWriter}). */
function newFilePrefix(path: string): string {
  return `.replikit-live-${basename(path)}-`;
}

/**
 * Deletes the new files a writer of the live file `path` killed before its rename left beside it:
 * nothing refers to them, and the pass that wrote them is repeated from the live file.
 */
async function dropStaleNewFiles(path: string): Promise<void> {
  const prefix = newFilePrefix(path);
  for (const name of await readdir(dirname(path))) {
    if (name.startsWith(prefix) && name.endsWith('.tmp.vhdx')) await rm(join(dirname(path), name), { force: true });
  }
}

/**
 * Writes to a stopped VM's live file: a new file (same parent, same block size) gets the live
 * file's own blocks and the writes, and replaces the live file at `close` (one rename): a crash
 * before leaves the disk as it was, so a repeated pass writes the same bytes again (and the new
 * file of the killed pass is deleted when the disk is opened for writing again).
 */
class LiveFileWriter implements LiveDisk {
  private closed = false;

  constructor(
    private readonly live: VhdxReader,
    private readonly file: VhdxWriter,
    private readonly tmp: string,
    private readonly target: string,
    private readonly parent: VhdxReader | undefined,
    private readonly faultHook: HyperVFailoverFaultHook | undefined,
  ) {}

  /** The ranges written so far (a read of one of them reads the new file). */
  private readonly written: Array<[number, number]> = [];

  get size(): number {
    return this.live.size;
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    if (!this.written.some(([from, to]) => from < offset + length && offset < to)) {
      return this.live.read(offset, length);
    }
    await this.file.flush();
    const fresh = await openVhdx(this.tmp);
    try {
      return await fresh.read(offset, length);
    } finally {
      await fresh.close();
    }
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    await this.file.write(offset, data);
    this.written.push([offset, offset + data.length]);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      try {
        await this.file.close();
      } finally {
        await this.live.close();
        await this.parent?.close();
      }
      await this.faultHook?.('live:replacing');
      await rename(this.tmp, this.target);
    } catch (error) {
      await rm(this.tmp, { force: true });
      throw error;
    }
  }
}

/**
 * See `FailoverHooks.openLiveDisk`. `read` opens the VM's live chain (a promoted replica runs:
 * its guest's writes land in the newest file). `write` is for a stopped VM that is no replica (the
 * original VM of a failback): the driver rewrites its live file (see {@link LiveFileWriter}), and
 * first records that RCT cannot have seen these writes (they bypass the host's disk stack): the
 * next forward run compares hashes from any snapshot older than now.
 */
export async function openLiveDisk(
  ctx: HyperVFailoverContext,
  vmId: string,
  diskId: string,
  mode: 'read' | 'write',
): Promise<LiveDisk> {
  const row = await vmRow(ctx, vmId);
  const drive = (await ctx.target.drives(row.Name)).find((d) => slotId(d) === diskId);
  const replica = await ctx.target.replicaById(row.Id);
  const path = replica
    ? (await ctx.target.drives(row.Name))[replica.identity.disks.indexOf(diskId)]?.Path
    : drive?.Path;
  if (!path) throw new NotFoundError(`VM '${row.Name}' has no disk '${diskId}'`);
  if (mode === 'read') {
    const image = await ctx.openImage(path);
    return {
      size: image.size,
      read: (offset, length) => image.read(offset, length),
      write: async () => {
        throw new ConflictError(`disk '${diskId}' of VM '${row.Name}' is opened for reading only`);
      },
      close: () => image.close(),
    };
  }
  if (replica) {
    throw new ConflictError(
      `VM '${row.Name}' is a replica; reverse replication writes only the original VM, never a replica's live disk`,
    );
  }
  if (!isOff(row.State)) {
    throw new ConflictError(`VM '${row.Name}' is ${row.State.toLowerCase()}; its disk is written only while it is off`);
  }
  await ReferencePointStore.of(row.Path).distrustBefore(row.Id, new Date().toISOString());
  const live = await openVhdx(path);
  const parentPath = live.info.parent;
  const parent = parentPath ? await openVhdx(parentPath) : undefined;
  await dropStaleNewFiles(path);
  const tmp = join(dirname(path), `${newFilePrefix(path)}${randomUUID()}.tmp.vhdx`);
  let file: VhdxWriter | undefined;
  try {
    file = await createVhdx(tmp, {
      size: live.size,
      blockSize: live.blockSize,
      logicalSectorSize: live.info.logicalSectorSize as 512 | 4096,
      ...(parent ? { parent } : {}),
    });
    for (const e of await ownExtents(live)) {
      for (let at = e.offset; at < e.offset + e.length; at += live.blockSize) {
        const length = Math.min(live.blockSize, e.offset + e.length - at);
        await file.write(at, await live.read(at, length));
      }
    }
    return new LiveFileWriter(live, file, tmp, path, parent, ctx.faultHook);
  } catch (error) {
    await file?.close().catch(() => undefined);
    await live.close();
    await parent?.close();
    await rm(tmp, { force: true });
    throw error;
  }
}
