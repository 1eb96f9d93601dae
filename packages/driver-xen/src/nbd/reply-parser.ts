import { NBD } from './nbd-constants.js';

/** A READ waiting for its reply: the bytes go straight into `target`. */
export interface PendingRead {
  target: Uint8Array;
  offset: number;
  resolve: () => void;
  reject: (error: Error) => void;
}

/** What the parser tells its connection. */
export interface ReplySink {
  /** The read of `handle`, or undefined if none is pending. */
  take(handle: bigint): PendingRead | undefined;
  /** The read is done: its data has been copied, or the server refused it (`errno`). */
  done(handle: bigint, read: PendingRead, errno: number): void;
  /** The server broke the protocol: the connection must go. */
  violation(message: string): void;
}

const HEADER = 16;

/**
 * Parses simple replies as the bytes arrive, in the socket's `data` handler: no promise or
 * buffer per reply, the payload copied once from the TLS chunk into the read's own target. The
 * length of a payload is always the request's, never a number the server sent.
 */
export class ReplyParser {
  private readonly header = Buffer.alloc(HEADER);
  private headerFilled = 0;
  private current: { handle: bigint; read: PendingRead; filled: number } | undefined;
  private failed = false;

  constructor(private readonly sink: ReplySink) {}

  /** Feeds one chunk of the stream. */
  push(chunk: Uint8Array): void {
    let at = 0;
    while (at < chunk.length && !this.failed) {
      const current = this.current;
      if (current) {
        const take = Math.min(chunk.length - at, current.read.target.length - current.filled);
        current.read.target.set(take === chunk.length ? chunk : chunk.subarray(at, at + take), current.filled);
        current.filled += take;
        at += take;
        if (current.filled === current.read.target.length) {
          this.current = undefined;
          this.sink.done(current.handle, current.read, 0);
        }
        continue;
      }
      const take = Math.min(chunk.length - at, HEADER - this.headerFilled);
      this.header.set(chunk.subarray(at, at + take), this.headerFilled);
      this.headerFilled += take;
      at += take;
      if (this.headerFilled === HEADER) {
        this.headerFilled = 0;
        this.onHeader();
      }
    }
  }

  private onHeader(): void {
    if (this.header.readUInt32BE(0) !== NBD.SIMPLE_REPLY_MAGIC) {
      this.fail('the NBD server sent a bad reply magic');
      return;
    }
    const errno = this.header.readUInt32BE(4);
    const handle = this.header.readBigUInt64BE(8);
    const read = this.sink.take(handle);
    if (!read) {
      this.fail('the NBD server answered a request we never sent');
      return;
    }
    // a refused read has no payload; an empty read is done at once
    if (errno !== 0 || read.target.length === 0) this.sink.done(handle, read, errno);
    else this.current = { handle, read, filled: 0 };
  }

  private fail(message: string): void {
    this.failed = true;
    this.sink.violation(message);
  }
}
