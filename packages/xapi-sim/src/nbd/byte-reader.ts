import type { Duplex } from 'node:stream';

/** Largest amount a peer may make the reader hold before it is cut off. */
const MAX_BUFFERED = 64 * 1024 * 1024;

/** Reads exact byte counts from a socket; `detach` hands the socket over (for STARTTLS). */
export class ByteReader {
  private chunks: Buffer[] = [];
  private have = 0;
  private wake: (() => void) | undefined;
  private done = false;
  private readonly onData = (chunk: Buffer) => {
    this.chunks.push(chunk);
    this.have += chunk.length;
    if (this.have > MAX_BUFFERED) this.socket.destroy();
    this.notify();
  };
  private readonly onEnd = () => {
    this.done = true;
    this.notify();
  };

  constructor(private readonly socket: Duplex) {
    socket.on('data', this.onData);
    socket.on('end', this.onEnd);
    socket.on('close', this.onEnd);
    socket.on('error', this.onEnd);
  }

  /** Exactly `n` bytes, or a rejection once the peer has gone. */
  async read(n: number): Promise<Buffer> {
    while (this.have < n) {
      if (this.done) throw new Error('the peer closed the connection');
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
    }
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    const out = all.subarray(0, n);
    const rest = all.subarray(n);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.have = rest.length;
    return out;
  }

  /** Bytes received but not yet read. */
  get pending(): number {
    return this.have;
  }

  /** Stops reading the socket, so another layer (TLS) can take it over. */
  detach(): void {
    this.socket.off('data', this.onData);
    this.socket.off('end', this.onEnd);
    this.socket.off('close', this.onEnd);
    this.socket.off('error', this.onEnd);
    this.socket.pause();
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }
}
