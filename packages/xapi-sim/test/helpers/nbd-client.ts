import { connect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { connect as tlsConnect } from 'node:tls';

/** A tiny, test-only NBD client that reads exact byte counts (written apart from the server). */
export class RawNbd {
  private buf = Buffer.alloc(0);
  private waiters: (() => void)[] = [];
  private closed = false;
  private constructor(public socket: Duplex) {
    this.listen(socket);
  }

  static async open(port: number): Promise<RawNbd> {
    const socket: Socket = connect(port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    return new RawNbd(socket);
  }

  private listen(s: Duplex) {
    s.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      for (const w of this.waiters.splice(0)) w();
    });
    const end = () => {
      this.closed = true;
      for (const w of this.waiters.splice(0)) w();
    };
    s.on('close', end);
    s.on('end', end);
    s.on('error', end);
  }

  /** `n` bytes, or `undefined` if the server closed first. */
  async read(n: number): Promise<Buffer | undefined> {
    while (this.buf.length < n) {
      if (this.closed) return undefined;
      await new Promise<void>((r) => this.waiters.push(r));
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  /** Resolves true once the server has closed the connection. */
  async closedByServer(): Promise<boolean> {
    while (!this.closed) await new Promise<void>((r) => this.waiters.push(r));
    return true;
  }

  write(b: Buffer): void {
    this.socket.write(b);
  }

  option(code: number, data = Buffer.alloc(0)): void {
    const h = Buffer.alloc(16);
    h.write('IHAVEOPT', 0, 'latin1');
    h.writeUInt32BE(code, 8);
    h.writeUInt32BE(data.length, 12);
    this.write(Buffer.concat([h, data]));
  }

  /** Reads one option reply: `{option, type, length}` (payload skipped). */
  async reply(): Promise<{ option: number; type: number } | undefined> {
    const h = await this.read(20);
    if (h === undefined) return undefined;
    await this.read(h.readUInt32BE(16));
    return { option: h.readUInt32BE(8), type: h.readUInt32BE(12) };
  }

  /** Upgrades to TLS after an acknowledged STARTTLS (certificate not checked: XO does the same). */
  async startTls(): Promise<void> {
    const raw = this.socket;
    raw.removeAllListeners('data');
    const secure = tlsConnect({ socket: raw as Socket, rejectUnauthorized: false });
    await new Promise<void>((resolve, reject) => secure.once('secureConnect', resolve).once('error', reject));
    this.socket = secure;
    this.listen(secure);
  }

  /** Sends a request and reads its simple reply header; returns the error code. */
  async request(type: number, offset: number, length: number, flags = 0): Promise<{ error: number; handle: bigint }> {
    const r = Buffer.alloc(28);
    r.writeUInt32BE(0x25609513, 0);
    r.writeUInt16BE(flags, 4);
    r.writeUInt16BE(type, 6);
    r.writeBigUInt64BE(42n, 8);
    r.writeBigUInt64BE(BigInt(offset), 16);
    r.writeUInt32BE(length, 24);
    this.write(r);
    const h = await this.read(16);
    if (h === undefined) throw new Error('closed');
    return { error: h.readUInt32BE(4), handle: h.readBigUInt64BE(8) };
  }
}
