import { connect as netConnect, type Socket } from 'node:net';
import { type TLSSocket, connect as tlsConnect } from 'node:tls';
import { AuthError, TransportError } from '@replikit/core';
import { errnoName, NBD } from './nbd-constants.js';
import { type PendingRead, ReplyParser } from './reply-parser.js';
import { StreamReader } from './stream-reader.js';

/** Where an export is and how to trust it (what `VDI.get_nbd_info` gives). */
export interface NbdEndpoint {
  /** Host address. */
  host: string;
  /** Port (10809 on XenServer). */
  port: number;
  /** The export name: `/<vdi-uuid>?session_id=<ref>`. Secret: never logged. */
  exportName: string;
  /** The server certificate (PEM) XAPI reported: the TLS peer must present exactly it. */
  cert?: string | undefined;
  /** Accept any certificate (no `cert` known). @default false */
  allowUnauthorized?: boolean | undefined;
}

/** A READ the server refused (an errno reply): the connection stays usable. */
export class NbdReplyError extends TransportError {
  constructor(
    readonly errno: number,
    offset: number,
    length: number,
  ) {
    super(`the NBD server refused a read of ${length} bytes at ${offset}: ${errnoName(errno)}`, { details: { errno } });
  }
}

/** The connection dropped or the server broke the protocol: reconnect and retry. */
export class NbdConnectionError extends TransportError {}

const pemBody = (pem: string) => pem.replace(/-----[^-]+-----|\s/g, '');

/**
 * One NBD connection to one export, as xapi-nbd serves it: fixed newstyle, STARTTLS, EXPORT_NAME,
 * the 134-byte reply, then READ requests answered in any order (matched by handle). Every number
 * read from the server is checked before use.
 */
export class NbdConnection {
  private readonly pending = new Map<bigint, PendingRead>();
  private nextHandle = 1n;
  private broken: Error | undefined;

  private constructor(
    private readonly socket: TLSSocket,
    /** The export's size in bytes. */
    readonly size: number,
    raw: Socket,
  ) {
    // The TLS layer does not always report the end of the socket beneath it: watch both.
    raw.on('close', () => {
      this.breakWith(new NbdConnectionError('the NBD connection dropped'));
      socket.destroy();
    });
    socket.on('close', () => this.breakWith(new NbdConnectionError('the NBD connection dropped')));
    socket.on('error', (error) =>
      this.breakWith(new NbdConnectionError(`the NBD connection failed: ${error.message}`, { cause: error })),
    );
    socket.on('end', () => {
      this.breakWith(new NbdConnectionError('the NBD server closed the connection'));
      socket.destroy();
    });
    // Replies are parsed in the data handler itself, the payload copied once into its target:
    // an await per reply and a queue of TLS chunks cost more CPU than the TLS decryption.
    const parser = new ReplyParser({
      take: (handle) => this.pending.get(handle),
      done: (handle, read, errno) => {
        this.pending.delete(handle);
        if (errno === 0) read.resolve();
        else read.reject(new NbdReplyError(errno, read.offset, read.target.length));
      },
      violation: (message) => {
        this.breakWith(new NbdConnectionError(message));
        socket.destroy();
      },
    });
    socket.on('data', (chunk: Buffer) => parser.push(chunk));
  }

  /** True once the connection can no longer serve reads. */
  get isBroken(): boolean {
    return this.broken !== undefined;
  }

  /** Reads in flight. */
  get inFlight(): number {
    return this.pending.size;
  }

  /** Connects, negotiates TLS and opens the export. */
  static async open(endpoint: NbdEndpoint, signal?: AbortSignal): Promise<NbdConnection> {
    const raw = await new Promise<Socket>((resolve, reject) => {
      const s = netConnect({ host: endpoint.host, port: endpoint.port, signal });
      s.setNoDelay(true);
      s.once('connect', () => resolve(s));
      s.once('error', (e) =>
        reject(
          new NbdConnectionError(
            `cannot connect to the NBD server at ${endpoint.host}:${endpoint.port}: ${e.message}`,
            { cause: e },
          ),
        ),
      );
    });
    try {
      const plain = new StreamReader(raw);
      const hello = await plain.read(18);
      if (hello.readBigUInt64BE(0) !== NBD.MAGIC || hello.readBigUInt64BE(8) !== NBD.IHAVEOPT) {
        throw new NbdConnectionError('the server does not speak fixed-newstyle NBD (bad magic)');
      }
      if ((hello.readUInt16BE(16) & NBD.FLAG_FIXED_NEWSTYLE) === 0) {
        throw new NbdConnectionError('the NBD server does not offer fixed newstyle negotiation');
      }
      raw.write(u32(NBD.CLIENT_FLAG_FIXED_NEWSTYLE));
      raw.write(option(NBD.OPT_STARTTLS, Buffer.alloc(0)));
      const reply = await plain.read(20);
      const replyLength = reply.readUInt32BE(16);
      if (reply.readBigUInt64BE(0) !== NBD.OPT_REPLY_MAGIC || reply.readUInt32BE(8) !== NBD.OPT_STARTTLS) {
        throw new NbdConnectionError('the NBD server sent a malformed reply to STARTTLS');
      }
      if (replyLength > NBD.MAX_OPTION_REPLY)
        throw new NbdConnectionError('the NBD server sent an oversized option reply');
      if (reply.readUInt32BE(12) !== NBD.REP_ACK) {
        throw new NbdConnectionError(
          `the NBD server refused STARTTLS (reply 0x${reply.readUInt32BE(12).toString(16)})`,
        );
      }
      await plain.read(replyLength);
      if (plain.pending > 0) throw new NbdConnectionError('the NBD server sent data before the TLS handshake');
      plain.detach();
      const tls = await new Promise<TLSSocket>((resolve, reject) => {
        const s = tlsConnect({ socket: raw, rejectUnauthorized: false, servername: undefined });
        s.once('secureConnect', () => resolve(s));
        s.once('error', (e) =>
          reject(new NbdConnectionError(`TLS with the NBD server failed: ${e.message}`, { cause: e })),
        );
      });
      if (endpoint.cert !== undefined && !endpoint.allowUnauthorized) {
        const presented = tls.getPeerCertificate().raw?.toString('base64');
        if (presented !== pemBody(endpoint.cert)) {
          tls.destroy();
          throw new AuthError(
            'the NBD server presented another certificate than the one XAPI reported; refusing to read',
          );
        }
      }
      const reader = new StreamReader(tls);
      tls.write(option(NBD.OPT_EXPORT_NAME, Buffer.from(endpoint.exportName, 'utf8')));
      const answer = await reader.read(NBD.EXPORT_REPLY_LENGTH).catch((e: Error) => {
        throw new NbdConnectionError(
          `the NBD server closed the connection on EXPORT_NAME (unknown export or session?): ${e.message}`,
        );
      });
      const size = answer.readBigUInt64BE(0);
      if (size > BigInt(Number.MAX_SAFE_INTEGER))
        throw new NbdConnectionError(`the NBD export claims an impossible size ${size}`);
      if ((answer.readUInt16BE(8) & NBD.FLAG_HAS_FLAGS) === 0) {
        throw new NbdConnectionError('the NBD export reply lacks HAS_FLAGS');
      }
      if (reader.pending > 0) throw new NbdConnectionError('the NBD server sent data before any request');
      reader.detach();
      return new NbdConnection(tls, Number(size), raw);
    } catch (error) {
      raw.destroy();
      throw error;
    }
  }

  /**
   * Reads `target.length` bytes at `offset` into `target`. Both must be 512-byte aligned and
   * inside the export; several reads may be in flight, answered in any order.
   */
  read(offset: number, target: Uint8Array): Promise<void> {
    if (this.broken) return Promise.reject(this.broken);
    if (offset % NBD.SECTOR !== 0 || target.length % NBD.SECTOR !== 0 || offset + target.length > this.size) {
      return Promise.reject(new RangeError(`NBD read ${offset}+${target.length} is unaligned or past ${this.size}`));
    }
    const handle = this.nextHandle++;
    const header = Buffer.allocUnsafe(28); // every byte written below
    header.writeUInt32BE(NBD.REQUEST_MAGIC, 0);
    header.writeUInt32BE(NBD.CMD_READ, 4); // flags 0, type READ: xapi-nbd parses both as one number
    header.writeBigUInt64BE(handle, 8);
    header.writeBigUInt64BE(BigInt(offset), 16);
    header.writeUInt32BE(target.length, 24);
    return new Promise<void>((resolve, reject) => {
      this.pending.set(handle, { target, offset, resolve, reject });
      this.socket.write(header);
    });
  }

  /** Sends DISC and closes. */
  close(): void {
    if (!this.broken) {
      const disc = Buffer.alloc(28);
      disc.writeUInt32BE(NBD.REQUEST_MAGIC, 0);
      disc.writeUInt32BE(NBD.CMD_DISC, 4);
      this.socket.end(disc);
    }
    this.breakWith(new NbdConnectionError('the NBD connection was closed'));
    this.socket.destroy();
  }

  /** Cuts the connection as a network failure would (tests). */
  destroy(): void {
    this.socket.destroy();
  }

  private breakWith(error: Error): void {
    this.broken ??= error;
    for (const p of this.pending.values()) p.reject(this.broken);
    this.pending.clear();
  }
}

function u32(value: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(value, 0);
  return b;
}

function option(code: number, payload: Buffer): Buffer {
  const b = Buffer.alloc(16 + payload.length);
  b.writeBigUInt64BE(NBD.IHAVEOPT, 0);
  b.writeUInt32BE(code, 8);
  b.writeUInt32BE(payload.length, 12);
  payload.copy(b, 16);
  return b;
}
