import { ConflictError, type DiskReader, InputError, type LiveDisk, type OperationOptions } from '@replikit/core';
import type { VdiSink, VdiSinkTarget } from '../vdi-sink.js';
import type { XenFailoverContext } from './failover-context.js';
import { liveVdiOf } from './live-vdi.js';
import { destroyProbe, takeProbe } from './vdi-probe.js';

/** How the live-disk hook reaches the bytes of a VDI (the driver's readers and writers). */
export interface LiveDiskIo {
  /** A reader of `size` bytes of VDI `vdiRef` (NBD when the pool offers it, else `/export_raw_vdi`). */
  openVdi(vdiRef: string, size: number, what: string, options?: OperationOptions): Promise<DiskReader>;
  /** A writer of VDI `target.vdiRef` (`PUT /import_raw_vdi`, which CBT tracks as guest writes). */
  openSink(target: VdiSinkTarget): VdiSink | Promise<VdiSink>;
}

/** Throws `E_INPUT` unless `[offset, offset + length)` lies inside a disk of `size` bytes. */
function checkRange(offset: number, length: number, size: number, what: string): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
    throw new InputError(`${what}: offset and length must be non-negative integers, got ${offset} and ${length}`);
  }
  if (offset + length > size) {
    throw new InputError(`${what}: the range ${offset}+${length} ends past the disk's ${size} bytes`);
  }
}

/**
 * See `FailoverHooks.openLiveDisk`. `read`: a running (or paused) VM's disk reads through a probe,
 * a fresh `VDI.snapshot` of the VDI it runs on, destroyed at `close` — XAPI will not plug a VDI
 * that a running guest has attached read-write into dom0 for an NBD export, and a snapshot gives
 * the pass one crash-consistent image while the guest goes on writing. A halted VM's VDI reads
 * as it is. `write`: only a halted VM that is neither a replica nor a test clone (`E_CONFLICT`
 * otherwise); the writes go through `PUT /import_raw_vdi`, so the VDI's CBT log marks them and
 * the next forward run sends them as changed blocks.
 */
export async function openLiveDisk(
  ctx: XenFailoverContext,
  io: LiveDiskIo,
  vmId: string,
  diskId: string,
  mode: 'read' | 'write',
  options?: OperationOptions,
): Promise<LiveDisk> {
  if (mode !== 'read' && mode !== 'write') throw new InputError(`mode must be 'read' or 'write', got ${String(mode)}`);
  const disk = await liveVdiOf(ctx, vmId, diskId, options);
  const what = `disk '${diskId}' of VM '${vmId}'`;
  if (mode === 'read') {
    const probe = disk.power === 'Halted' ? undefined : await takeProbe(ctx, disk, options);
    let reader: DiskReader;
    try {
      reader = await io.openVdi(probe ?? disk.vdiRef, disk.size, what, options);
    } catch (error) {
      if (probe) await destroyProbe(ctx, probe, options);
      throw error;
    }
    let closed = false;
    return {
      size: disk.size,
      read: (offset, length) => reader.read(offset, length, options),
      async write() {
        throw new ConflictError(`${what} was opened for reading only`);
      },
      async close() {
        if (closed) return;
        closed = true;
        try {
          await reader.close();
        } finally {
          if (probe) await destroyProbe(ctx, probe, options);
        }
      },
    };
  }
  if (disk.isReplica || disk.isClone || disk.power !== 'Halted') {
    const why = disk.isReplica
      ? 'it is a replica'
      : disk.isClone
        ? 'it is a test clone'
        : `the VM is ${disk.power.toLowerCase()}; shut it down first`;
    throw new ConflictError(`${what} is not written by reverse replication: ${why}`, {
      details: { vmId, powerState: disk.power },
    });
  }
  const target: VdiSinkTarget = {
    vdiRef: disk.vdiRef,
    vdiSize: Number(disk.vdi.virtual_size),
    what,
    signal: options?.signal,
  };
  const sink = await io.openSink(target);
  let closed = false;
  return {
    size: disk.size,
    async read(offset, length) {
      checkRange(offset, length, disk.size, what);
      await sink.flush(); // XAPI's export reads what was uploaded; the sink holds nothing after
      const reader = await io.openVdi(disk.vdiRef, disk.size, what, options);
      try {
        return await reader.read(offset, length, options);
      } finally {
        await reader.close();
      }
    },
    async write(offset, data) {
      checkRange(offset, data.length, disk.size, what);
      await sink.write(offset, data);
    },
    async close() {
      if (closed) return;
      closed = true;
      try {
        await sink.flush();
      } finally {
        await sink.close();
      }
    },
  };
}
