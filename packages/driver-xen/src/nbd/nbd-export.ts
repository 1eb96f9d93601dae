import { TransportError, throwIfAborted } from '@replikit/core';
import { backoffDelay, DEFAULT_RETRY, type RetryPolicy, raceAbort, sleep } from '../xapi/backoff.js';
import { NbdConnection, NbdConnectionError, type NbdEndpoint } from './nbd-connection.js';
import { NBD } from './nbd-constants.js';

/** Options of {@link NbdExport.open}. */
export interface NbdExportOptions {
  /**
   * Connections opened to the export (one after the other, as xapi-nbd wants).
   * @default 2
   */
  connections?: number;
  /**
   * Longest single READ request; larger reads are split.
   * @default 2 MiB
   */
  maxRequest?: number;
  /** Retries on a dropped connection. @default {@link DEFAULT_RETRY} */
  retry?: Partial<RetryPolicy>;
  /** Cancels the opening. */
  signal?: AbortSignal;
}

/**
 * An NBD export read over several connections: reads at any offset and length (aligned to 512
 * bytes on the wire, the extra bytes dropped), split into requests spread over the connections,
 * and retried on a fresh connection when one drops. The bytes of a last partial sector (an export
 * whose size is not a multiple of 512) cannot be read over NBD: {@link NbdExport.alignedSize}
 * says where they start.
 */
export class NbdExport {
  /** Connections opened again after a drop (for tests and logs). */
  reconnects = 0;
  private next = 0;
  private closed = false;
  private readonly reopening = new Map<number, Promise<NbdConnection>>();

  private constructor(
    private readonly endpoint: NbdEndpoint,
    private readonly connections: NbdConnection[],
    /** The export's size. */
    readonly size: number,
    private readonly maxRequest: number,
    private readonly policy: RetryPolicy,
  ) {}

  /** Opens `connections` connections to the export. */
  static async open(endpoint: NbdEndpoint, options: NbdExportOptions = {}): Promise<NbdExport> {
    const count = options.connections ?? 2;
    const maxRequest = options.maxRequest ?? 2 * 1024 * 1024;
    if (!Number.isSafeInteger(count) || count < 1) throw new RangeError('connections must be ≥ 1');
    if (maxRequest % NBD.SECTOR !== 0 || maxRequest <= 0) throw new RangeError('maxRequest must be a multiple of 512');
    const opened: NbdConnection[] = [];
    try {
      for (let i = 0; i < count; i++) {
        throwIfAborted(options.signal);
        opened.push(await NbdConnection.open(endpoint, options.signal));
      }
    } catch (error) {
      for (const c of opened) c.close();
      throw error;
    }
    const size = opened[0]!.size;
    if (opened.some((c) => c.size !== size)) {
      for (const c of opened) c.close();
      throw new TransportError('the NBD connections of one export report different sizes');
    }
    return new NbdExport(endpoint, opened, size, maxRequest, { ...DEFAULT_RETRY, ...options.retry });
  }

  /** The bytes `[0, alignedSize)` can be read over NBD. */
  get alignedSize(): number {
    return this.size - (this.size % NBD.SECTOR);
  }

  /** The open connections (tests cut one to model a dropped link). */
  get live(): readonly NbdConnection[] {
    return this.connections;
  }

  /**
   * Reads `target.length` bytes at `offset` into `target`; the range must lie inside
   * `[0, alignedSize)`.
   */
  async readInto(offset: number, target: Uint8Array, signal?: AbortSignal): Promise<void> {
    const end = offset + target.length;
    if (!Number.isSafeInteger(offset) || offset < 0 || end > this.alignedSize) {
      throw new RangeError(`NBD read ${offset}+${target.length} outside the readable ${this.alignedSize} bytes`);
    }
    const start = offset - (offset % NBD.SECTOR);
    const stop = Math.min(this.alignedSize, Math.ceil(end / NBD.SECTOR) * NBD.SECTOR);
    const direct = start === offset && stop === end;
    const buffer = direct ? target : new Uint8Array(stop - start);
    const parts: Promise<void>[] = [];
    for (let at = start; at < stop; at += this.maxRequest) {
      const length = Math.min(this.maxRequest, stop - at);
      parts.push(this.request(at, buffer.subarray(at - start, at - start + length), signal));
    }
    await Promise.all(parts);
    if (!direct) target.set(buffer.subarray(offset - start, offset - start + target.length));
  }

  /** Closes every connection. */
  close(): void {
    this.closed = true;
    for (const c of this.connections) c.close();
  }

  private async request(offset: number, target: Uint8Array, signal?: AbortSignal): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      throwIfAborted(signal);
      if (this.closed) throw new TransportError('the NBD export was closed');
      const slot = this.next++ % this.connections.length;
      try {
        const connection = await this.connection(slot, signal);
        await raceAbort(connection.read(offset, target), signal);
        return;
      } catch (error) {
        const retryable = error instanceof NbdConnectionError;
        if (!retryable || signal?.aborted || this.closed || attempt + 1 >= this.policy.attempts) throw error;
        await sleep(attempt === 0 ? 0 : backoffDelay(this.policy, attempt - 1), signal);
      }
    }
  }

  /** The connection of `slot`, opened again (once, for every waiting read) when it broke. */
  private connection(slot: number, signal?: AbortSignal): Promise<NbdConnection> {
    const current = this.connections[slot]!;
    if (!current.isBroken) return Promise.resolve(current);
    let reopening = this.reopening.get(slot);
    if (!reopening) {
      reopening = NbdConnection.open(this.endpoint, signal).then(
        (fresh) => {
          this.reopening.delete(slot);
          if (this.closed) {
            fresh.close();
            throw new TransportError('the NBD export was closed');
          }
          if (fresh.size !== this.size) {
            fresh.close();
            throw new TransportError(`the NBD export changed size (${this.size} → ${fresh.size}) after a reconnect`);
          }
          this.connections[slot] = fresh;
          this.reconnects++;
          return fresh;
        },
        (error) => {
          this.reopening.delete(slot);
          throw error;
        },
      );
      this.reopening.set(slot, reopening);
    }
    return reopening;
  }
}
