import { constants } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { AbstractDiskReader, AbstractDiskWriter, IoError, type ReplikitError, toStorageError } from '@replikit/core';
import type { DeviceMapView, VisibleDisk } from './device-map-view.js';

/** Opens a plugged disk's data file without following a symbolic link; it must be a regular file. */
export async function openDataFile(disk: VisibleDisk, write: boolean): Promise<FileHandle> {
  let fh: FileHandle;
  try {
    fh = await open(disk.path, (write ? constants.O_RDWR : constants.O_RDONLY) | constants.O_NOFOLLOW);
  } catch (error) {
    throw toStorageError(error, `opening VDI ${disk.vdi}`);
  }
  const st = await fh.stat();
  if (!st.isFile()) {
    await fh.close();
    throw new IoError(`the data file of VDI ${disk.vdi} is not a regular file`);
  }
  return fh;
}

/** Reads a VDI plugged into the appliance (the source appliance's view of a snapshot VDI). */
export class PluggedDiskReader extends AbstractDiskReader {
  constructor(
    private readonly view: DeviceMapView,
    private readonly disk: VisibleDisk,
    private readonly fh: FileHandle,
  ) {
    super({ size: disk.size, blockSize: 512, what: `VDI ${disk.vdi} (device ${disk.device})` });
  }

  protected async _readInto(offset: number, target: Uint8Array): Promise<void> {
    await this.view.resolve(this.disk.vdi);
    let done = 0;
    while (done < target.length) {
      const { bytesRead } = await this.fh.read(target, done, target.length - done, offset + done);
      if (bytesRead === 0) {
        target.fill(0, done);
        return;
      }
      done += bytesRead;
    }
  }

  protected override async _close(): Promise<void> {
    await this.fh.close();
  }
}

/**
 * Writes a VDI plugged read-write into the appliance (the target appliance's view of a replica
 * VDI). Every write first checks that the disk is still plugged: after `VBD.unplug` it fails.
 */
export class PluggedDiskWriter extends AbstractDiskWriter {
  constructor(
    private readonly view: DeviceMapView,
    private readonly disk: VisibleDisk,
    private readonly fh: FileHandle,
  ) {
    super({ size: disk.size, what: `VDI ${disk.vdi} (device ${disk.device})` });
  }

  protected async _write(offset: number, data: Uint8Array): Promise<void> {
    await this.view.resolve(this.disk.vdi, true);
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await this.fh.write(data, done, data.length - done, offset + done);
      done += bytesWritten;
    }
  }

  protected async _writeZeroes(offset: number, length: number): Promise<void> {
    const chunk = new Uint8Array(Math.min(length, 1 << 20));
    for (let at = offset; at < offset + length; at += chunk.length) {
      await this._write(at, chunk.subarray(0, Math.min(chunk.length, offset + length - at)));
    }
  }

  protected override async _flush(): Promise<void> {
    await this.fh.sync();
  }

  protected override async _close(): Promise<void> {
    await this.fh.close();
  }

  protected override _wrapError(error: unknown, what: string): ReplikitError {
    return toStorageError(error, what);
  }
}
