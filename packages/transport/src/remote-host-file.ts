import type { ByteSource } from '@replikit/formats';
import { MAX_HOST_WRITE } from './host-file-ops.js';
import type { HostFileCall } from './remote-host-files.js';
import { MAX_READ_BYTES } from './source-read-ops.js';

/**
 * One file on the agent's host, written and read by offset through it (each call names the path;
 * the agent opens the file without following a link, under its root, for each request). Shaped
 * like the part of Node's `FileHandle` a VHDX writer uses, so `createVhdx` writes through it.
 */
export class RemoteHostFile {
  constructor(
    /** The file's path on the host (see {@link RemoteHostFile.renamed}). */
    public path: string,
    private readonly call: HostFileCall,
  ) {}

  /**
   * Follows a rename made on the host: later calls name `to` (a local handle follows its file
   * through a rename; this one names its file in every request).
   */
  renamed(to: string): void {
    this.path = to;
  }

  /** Writes `length` bytes of `data` from `offset` at `position`, as requests of at most 32 KiB. */
  async write(data: Uint8Array, offset: number, length: number, position: number): Promise<{ bytesWritten: number }> {
    for (let done = 0; done < length; ) {
      const n = Math.min(MAX_HOST_WRITE, length - done);
      const chunk = data.subarray(offset + done, offset + done + n);
      const encoded = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength).toString('base64');
      await this.call('hostFileWrite', { path: this.path, offset: position + done, data: encoded });
      done += n;
    }
    return { bytesWritten: length };
  }

  /** Reads up to `length` bytes at `position` into `buffer` from `offset` (fewer at the file's end). */
  async read(buffer: Uint8Array, offset: number, length: number, position: number): Promise<{ bytesRead: number }> {
    let done = 0;
    while (done < length) {
      const want = Math.min(MAX_READ_BYTES, length - done);
      const bytes = (await this.call('hostFileRead', {
        path: this.path,
        offset: position + done,
        length: want,
      })) as Uint8Array;
      if (bytes.length > want) throw new RangeError(`the agent answered ${bytes.length} bytes for a read of ${want}`);
      buffer.set(bytes, offset + done);
      done += bytes.length;
      if (bytes.length < want) break;
    }
    return { bytesRead: done };
  }

  /** Sets the file's length. */
  async truncate(length: number): Promise<void> {
    await this.call('hostFileTruncate', { path: this.path, size: length });
  }

  /** fsyncs the file on the host. */
  async sync(): Promise<void> {
    await this.call('hostFileSync', { path: this.path });
  }

  /** Nothing to release: the agent opens the file per request. */
  async close(): Promise<void> {}
}

/** A file on the agent's host as a {@link ByteSource} of `size` bytes (for `openVhdxSource`). */
export function remoteByteSource(file: RemoteHostFile, size: number): ByteSource {
  return {
    name: file.path,
    size,
    async readInto(target: Uint8Array, offset: number, what: string): Promise<void> {
      const { bytesRead } = await file.read(target, 0, target.length, offset);
      if (bytesRead !== target.length) {
        throw new RangeError(`${file.path}: ${what}: the file ended after ${bytesRead} of ${target.length} bytes`);
      }
    },
    close: () => file.close(),
  };
}
