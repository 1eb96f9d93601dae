import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { NotFoundError, StateError, toStorageError } from '@replikit/core';
import { checkRange } from '@replikit/core/internal';
import { writeFully } from './block-io.js';
import {
  CBT_HEADER_SIZE,
  type ChangeBitmap,
  cbtPathOf,
  dropChangeBitmap,
  type ImageStamp,
  readChangeBitmap,
  sameStamp,
  stampOf,
  stampWithOwnTime,
} from './change-bitmap.js';
import { openDataFile, READ_WRITE } from './data-file.js';
import { acquireLockFile, type LockHandle } from './locks.js';
import { assertSafeName } from './names.js';
import { fileVmPaths } from './paths.js';
import { checkImageSize, readVmJson } from './vm-metadata.js';

/** A live disk of a file VM opened for guest writes by {@link openGuestDisk}. */
export interface GuestDiskHandle {
  /** Virtual size in bytes. */
  readonly size: number;
  /** True while the disk's writes are being tracked (the VM has `changeTracking` and its bitmap is valid). */
  readonly tracking: boolean;
  /** Writes `data` at `offset` into the live image, as the running guest would. */
  write(offset: number, data: Uint8Array): Promise<void>;
  /** Records the image's state in the change bitmap and releases the VM lock. Calling it twice is harmless. */
  close(): Promise<void>;
}

/**
 * Opens a disk of a file VM for guest writes: the way to make many writes cheaply (one lock, one
 * open, one bitmap read). It holds the VM lock until {@link GuestDiskHandle.close}, so no snapshot
 * can be taken meanwhile (`snapshot` rejects with `E_CONFLICT`), and so a snapshot never sees half
 * of a batch.
 *
 * On a VM with change tracking, opening marks the disk's bitmap `<image>.cbt` "session open" and
 * makes that durable; each write then marks its 64 KiB granules in the bitmap before writing the
 * data (no flush per write), gives the image a modification time of its own and records the image's
 * size, mtime, ctime and inode; `close` flushes the bits, then records the stamp and clears the
 * flag, durably. A crash before `close` leaves the flag set: the next snapshot copies the whole disk.
 * Before each write the image's stamp is compared with the one after the previous write: a
 * difference means something else wrote the image, and the bitmap is dropped (a full copy next
 * time). Limit: a write by another program that lands between one of these writes and its
 * timestamp update (the same instant) is not noticed, and its block may be missing from the next
 * differencing snapshot.
 *
 * @throws {@link @replikit/core!NotFoundError} for an unknown VM or disk, {@link @replikit/core!ConflictError}
 * while a snapshot is being taken or another guest handle is open.
 * @example
 * ```ts
 * const disk = await openGuestDisk('/tmp/vms', 'web', 'system');
 * try {
 *   for (let i = 0; i < 1000; i++) await disk.write(i * 1_048_576, new Uint8Array(4096).fill(i));
 * } finally {
 *   await disk.close();
 * }
 * ```
 */
export async function openGuestDisk(root: string, vmName: string, diskId: string): Promise<GuestDiskHandle> {
  const paths = fileVmPaths(root, vmName);
  const vm = await readVmJson(paths.dir);
  assertSafeName(diskId, 'disk id');
  const disk = vm.disks.find((d) => d.id === diskId);
  if (!disk)
    throw new NotFoundError(`VM '${vmName}' has no disk '${diskId}' (it has ${vm.disks.map((d) => d.id).join(', ')})`);
  const path = join(paths.dir, disk.file);
  await checkImageSize(path, disk.id, disk.size);
  const what = `disk '${diskId}' of VM '${vmName}'`;
  const lock = await acquireLockFile(paths.vmLock, `VM '${vmName}' (a snapshot is being taken)`);
  let fh: FileHandle | undefined;
  let cbtFh: FileHandle | undefined;
  try {
    fh = await openDataFile(path, READ_WRITE, { what });
    let cbt: ChangeBitmap | undefined;
    const cbtPath = cbtPathOf(path);
    if (vm.changeTracking && !vm.replica) {
      const found = await readChangeBitmap(cbtPath, disk.size);
      if (found.state === 'valid' && sameStamp(found.cbt.stamp, stampOf(await fh.stat({ bigint: true })))) {
        cbt = found.cbt;
        cbtFh = await openDataFile(cbtPath, READ_WRITE, { what: `the change bitmap of ${what}` });
        // Durably "open" first: from here on new bits are written without a flush each, and a
        // crash before close leaves this flag, which makes the next snapshot a full copy.
        cbt.sessionOpen = true;
        await writeFully(cbtFh, cbt.encodeHeader(), 0);
        await cbtFh.datasync();
      } else if (found.state !== 'missing') {
        // Corrupt, or the image changed behind the driver: these bits cannot be trusted any more.
        await dropChangeBitmap(cbtPath, paths.dir);
      }
    }
    return new GuestDisk(fh, cbtFh, cbt, { path, cbtPath, dir: paths.dir, size: disk.size, what, lock });
  } catch (error) {
    await cbtFh?.close().catch(() => undefined);
    await fh?.close().catch(() => undefined);
    await lock.release();
    throw toStorageError(error, `opening ${what}`);
  }
}

interface GuestDiskPlace {
  path: string;
  cbtPath: string;
  dir: string;
  size: number;
  what: string;
  lock: LockHandle;
}

class GuestDisk implements GuestDiskHandle {
  readonly size: number;
  private readonly fh: FileHandle;
  private cbtFh: FileHandle | undefined;
  private cbt: ChangeBitmap | undefined;
  private readonly place: GuestDiskPlace;
  /** The image's stamp after our last write (undefined until the first write). */
  private known: ImageStamp | undefined;
  private closed = false;
  private failed: unknown;
  /** The writes in flight, chained. */
  private queue: Promise<void> = Promise.resolve();
  /** New bits were written since the session was opened. */
  private bitsWritten = false;

  constructor(fh: FileHandle, cbtFh: FileHandle | undefined, cbt: ChangeBitmap | undefined, place: GuestDiskPlace) {
    this.fh = fh;
    this.cbtFh = cbtFh;
    this.cbt = cbt;
    this.place = place;
    this.size = place.size;
    this.known = cbt?.stamp;
  }

  get tracking(): boolean {
    return this.cbt !== undefined;
  }

  write(offset: number, data: Uint8Array): Promise<void> {
    // One at a time: each write's stamp check relies on the previous write's stamp.
    const result = this.queue.then(() => this.writeNow(offset, data));
    this.queue = result.catch(() => undefined);
    return result;
  }

  private async writeNow(offset: number, data: Uint8Array): Promise<void> {
    if (this.closed) throw new StateError(`${this.place.what}: the guest disk handle is closed; open a new one`);
    if (this.failed)
      throw new StateError(`${this.place.what}: an earlier write failed; close the handle and reopen it`);
    checkRange(this.size, offset, data.length, `writing ${this.place.what}`);
    try {
      if (this.cbt && data.length > 0) await this.track(offset, data.length);
      await writeFully(this.fh, data, offset);
      // A modification time of our own: a later write by anything else changes the stamp.
      if (this.cbt) this.known = await stampWithOwnTime(this.fh);
    } catch (error) {
      this.failed = error;
      throw toStorageError(error, `writing ${this.place.what}`);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.queue;
    this.closed = true;
    try {
      if (this.cbt && this.cbtFh && !this.failed) {
        // After the data: the bits and the image's new stamp, made durable together, then the
        // session is closed. A crash before this leaves the session open (a full copy next time).
        this.cbt.stamp = this.known!;
        this.cbt.sessionOpen = false;
        if (this.bitsWritten) await this.cbtFh.datasync();
        await writeFully(this.cbtFh, this.cbt.encodeHeader(), 0);
        await this.cbtFh.datasync();
      }
    } catch (error) {
      throw toStorageError(error, `recording the state of ${this.place.what}`);
    } finally {
      await this.cbtFh?.close().catch(() => undefined);
      await this.fh.close().catch(() => undefined);
      await this.place.lock.release();
    }
  }

  /** Marks the granules of `[offset, offset + length)` dirty, durably, before the data is written. */
  private async track(offset: number, length: number): Promise<void> {
    const cbt = this.cbt!;
    const now = stampOf(await this.fh.stat({ bigint: true }));
    if (!sameStamp(now, this.known!)) {
      // Written by someone else since our last write: stop trusting the bitmap.
      await this.loseTracking();
      return;
    }
    const granule = cbt.map.granule;
    const changed = cbt.map.setRange(Math.floor(offset / granule), Math.floor((offset + length - 1) / granule));
    if (!changed) return;
    // No flush: the session flag made durable at open covers a crash; the page cache keeps
    // these bytes ahead of the data for any reader of this host.
    const fh = this.cbtFh!;
    await writeFully(fh, cbt.map.bits.subarray(changed.start, changed.end), CBT_HEADER_SIZE + changed.start);
    await writeFully(fh, cbt.encodeHeader(), 0);
    this.bitsWritten = true;
  }

  private async loseTracking(): Promise<void> {
    this.cbt = undefined;
    await this.cbtFh?.close();
    this.cbtFh = undefined;
    await dropChangeBitmap(this.place.cbtPath, this.place.dir);
  }
}

/**
 * Writes `data` into a disk of a file VM the way its running guest would: straight into the live
 * image (through {@link openGuestDisk}: on a VM with change tracking the write is tracked). It takes
 * the VM lock for the duration, so it never lands in the middle of a snapshot (it rejects with
 * `E_CONFLICT` while a snapshot is being taken). Used by demos and tests to make a source VM change
 * between runs; for many writes, {@link openGuestDisk} is much cheaper.
 *
 * @throws {@link @replikit/core!InputError} for a range outside the disk, {@link @replikit/core!NotFoundError} for an unknown VM or disk.
 * @example
 * ```ts
 * await writeGuestDisk('/tmp/vms', 'web', 'system', 4096, new TextEncoder().encode('hello'));
 * ```
 */
export async function writeGuestDisk(
  root: string,
  vmName: string,
  diskId: string,
  offset: number,
  data: Uint8Array,
): Promise<void> {
  const paths = fileVmPaths(root, vmName);
  const vm = await readVmJson(paths.dir);
  const disk = vm.disks.find((d) => d.id === diskId);
  if (disk) checkRange(disk.size, offset, data.length, `writing disk '${diskId}' of VM '${vmName}'`);
  const handle = await openGuestDisk(root, vmName, diskId);
  try {
    await handle.write(offset, data);
  } finally {
    await handle.close();
  }
}
