import { AbstractDiskReader, type DiskRef, type OperationOptions } from '@replikit/core';
import { MAX_READ_BYTES } from './source-read-ops.js';

/** What {@link RemoteDiskReader} asks its agent: one bounded read (the remote driver's `readDisk`). */
export type RemoteRead = (offset: number, length: number, options?: OperationOptions) => Promise<Uint8Array>;

/**
 * Reads a disk of an agent that serves reads (the `source` feature), such as a delegate
 * appliance reading the snapshot VDIs plugged into it: each read is one or more `readDisk`
 * requests of at most 4 MiB on the driver's target-control connection. The disk's size is the
 * agent's listing; every range is checked against it before it is asked for.
 */
export class RemoteDiskReader extends AbstractDiskReader {
  constructor(
    disk: DiskRef,
    private readonly readRange: RemoteRead,
    blockSize = 64 * 1024,
  ) {
    super({ size: disk.size, blockSize, what: `remote disk ${disk.id}` });
  }

  protected async _readInto(offset: number, target: Uint8Array, options?: OperationOptions): Promise<void> {
    for (let done = 0; done < target.length; ) {
      const length = Math.min(MAX_READ_BYTES, target.length - done);
      const bytes = await this.readRange(offset + done, length, options);
      if (bytes.length !== length) {
        throw new RangeError(`the agent answered ${bytes.length} bytes for a read of ${length}`);
      }
      target.set(bytes, done);
      done += length;
    }
  }
}
