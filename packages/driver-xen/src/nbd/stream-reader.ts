import type { Duplex } from 'node:stream';

/**
 * Exact-length reads from a socket: `read(n)` gives exactly `n` bytes, `readInto(target)` fills
 * `target`. Data that arrives before it is asked for is queued; the end of the stream or an error
 * rejects the waiting read and every later one.
 */
export class StreamReader {
  private chunks: Buffer[] = [];
  private queued = 0;
  private waiter: { target: Uint8Array; filled: number; resolve: () => void; reject: (e: Error) => void } | undefined;
  private failure: Error | undefined;
  private readonly onData = (chunk: Buffer) => this.push(chunk);
  private readonly onEnd = () => this.fail(new Error('the NBD server closed the connection'));
  private readonly onError = (error: Error) => this.fail(error);

  constructor(private readonly stream: Duplex) {
    stream.on('data', this.onData);
    stream.on('end', this.onEnd);
    stream.on('close', this.onEnd);
    stream.on('error', this.onError);
  }

  /** Bytes received and not read yet. */
  get pending(): number {
    return this.queued;
  }

  /** Stops listening (before the socket is handed to TLS). */
  detach(): void {
    this.stream.off('data', this.onData);
    this.stream.off('end', this.onEnd);
    this.stream.off('close', this.onEnd);
    this.stream.off('error', this.onError);
  }

  /** Exactly `n` bytes. */
  async read(n: number): Promise<Buffer> {
    const out = Buffer.allocUnsafe(n);
    await this.readInto(out);
    return out;
  }

  /** Fills `target` exactly. */
  readInto(target: Uint8Array): Promise<void> {
    if (this.waiter) return Promise.reject(new Error('StreamReader: one read at a time'));
    return new Promise<void>((resolve, reject) => {
      this.waiter = { target, filled: 0, resolve, reject };
      this.drain();
    });
  }

  private push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.queued += chunk.length;
    this.drain();
  }

  private drain(): void {
    const w = this.waiter;
    if (!w) return;
    while (w.filled < w.target.length && this.chunks.length > 0) {
      const head = this.chunks[0]!;
      const take = Math.min(head.length, w.target.length - w.filled);
      w.target.set(take === head.length ? head : head.subarray(0, take), w.filled);
      w.filled += take;
      this.queued -= take;
      if (take === head.length) this.chunks.shift();
      else this.chunks[0] = head.subarray(take);
    }
    if (w.filled === w.target.length) {
      this.waiter = undefined;
      w.resolve();
    } else if (this.failure) {
      this.waiter = undefined;
      w.reject(this.failure);
    }
  }

  private fail(error: Error): void {
    this.failure ??= error;
    this.drain();
  }
}
