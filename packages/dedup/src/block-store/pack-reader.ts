import { closeSync, openSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { FormatError, NotFoundError, toStorageError } from '@replikit/core';
import { type ChunkLocation, parseRecordHeader, payloadIntact, RECORD_HEADER_BYTES } from './pack-format.js';

/**
 * Reads records out of packs, keeping each pack it opened open until {@link PackReader.close}
 * (a restore reads thousands of records from a few packs).
 */
export class PackReader {
  private readonly fds = new Map<string, number>();

  constructor(private readonly dir: string) {}

  /**
   * The payload (an encoded chunk) of the record at `location`, checked: its header is intact,
   * names `address`, and the payload matches its CRC-32. With `into` (at least the record's
   * bytes), the record is read there and the payload returned is a view of it.
   * @throws {@link @replikit/core!FormatError} when it is not, {@link @replikit/core!NotFoundError} when the pack is gone.
   */
  payload(address: string, location: ChunkLocation, into?: Uint8Array): Buffer {
    const fd = this.fd(location.pack);
    const bytes = into
      ? Buffer.from(into.buffer, into.byteOffset, RECORD_HEADER_BYTES + location.length)
      : Buffer.allocUnsafe(RECORD_HEADER_BYTES + location.length);
    let read: number;
    try {
      read = readSync(fd, bytes, 0, bytes.length, location.offset);
    } catch (error) {
      throw toStorageError(error, `reading chunk ${address} from pack ${location.pack}`);
    }
    const header = read === bytes.length ? parseRecordHeader(bytes) : undefined;
    if (!header || header.address !== address || header.length !== location.length) {
      throw new FormatError(`chunk ${address}: its record in pack ${location.pack} is damaged (header)`);
    }
    const payload = bytes.subarray(RECORD_HEADER_BYTES);
    if (!payloadIntact(payload, header.payloadCrc)) {
      throw new FormatError(`chunk ${address}: its record in pack ${location.pack} is damaged (checksum mismatch)`);
    }
    return payload;
  }

  private fd(pack: string): number {
    let fd = this.fds.get(pack);
    if (fd === undefined) {
      try {
        fd = openSync(join(this.dir, pack), 'r');
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new NotFoundError(`pack ${pack} is missing`);
        throw toStorageError(error, `opening pack ${pack}`);
      }
      this.fds.set(pack, fd);
    }
    return fd;
  }

  /** Closes every pack this reader opened. */
  close(): void {
    for (const fd of this.fds.values()) closeSync(fd);
    this.fds.clear();
  }
}
