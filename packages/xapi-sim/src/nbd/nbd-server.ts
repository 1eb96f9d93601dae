import type { FileHandle } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { createServer, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { createSecureContext, TLSSocket } from 'node:tls';
import { openVdiRead } from '../http/vdi-blocks.js';
import type { SimState } from '../sim-state.js';
import type { TlsMaterial } from '../tls/self-signed.js';
import { ByteReader } from './byte-reader.js';
import { attachToDom0, detachFromDom0 } from './dom0-vbd.js';
import { NBD, optionReply, simpleReply } from './nbd-protocol.js';

/** Longest option payload accepted (an export name is short). */
const MAX_OPTION = 4096;
/** Longest read served in one request. */
const MAX_READ = 32 * 1024 * 1024;

/** A running NBD server of the simulated host. */
export interface NbdServer {
  readonly port: number;
  close(): Promise<void>;
}

async function send(socket: Duplex, ...parts: Buffer[]): Promise<void> {
  const data = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  if (socket.write(data)) return;
  // a peer that dies with replies queued never drains: 'close' ends the wait, and the next
  // read fails, so the connection's dom0 VBD is freed
  await new Promise<void>((resolve) => {
    const done = () => {
      socket.off('drain', done);
      socket.off('close', done);
      resolve();
    };
    socket.once('drain', done);
    socket.once('close', done);
    if (socket.destroyed) done();
  });
}

/** Parses `/<vdi-uuid>?session_id=<ref>` into its parts, or undefined. */
function parseExportName(name: string): { uuid: string; session: string } | undefined {
  const m = /^\/([0-9a-fA-F-]{36})\?session_id=([^&]+)$/.exec(name);
  return m === null ? undefined : { uuid: m[1]!, session: m[2]! };
}

/**
 * Starts an NBD server that behaves like xapi-nbd: fixed newstyle, STARTTLS mandatory,
 * `EXPORT_NAME` as the only way in (INFO, GO, structured replies and meta contexts are
 * unsupported), 124 zero bytes after the export flags, read-only with 512-byte-aligned reads
 * (`EINVAL` otherwise), the session checked from the export name, and one dom0 VBD per
 * connection while it lasts.
 */
export async function startNbdServer(sim: SimState, host: string, port: number, tls: TlsMaterial): Promise<NbdServer> {
  const context = createSecureContext({ key: tls.key, cert: tls.cert });
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    serve(sim, socket, context).catch(() => socket.destroy());
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

async function serve(sim: SimState, raw: Socket, context: ReturnType<typeof createSecureContext>): Promise<void> {
  const greeting = Buffer.alloc(18);
  NBD.MAGIC.copy(greeting, 0);
  NBD.IHAVEOPT.copy(greeting, 8);
  greeting.writeUInt16BE(NBD.FLAG_FIXED_NEWSTYLE, 16);
  await send(raw, greeting);
  let socket: Duplex = raw;
  let reader = new ByteReader(raw);
  await reader.read(4); // client flags
  let secure = false;
  for (;;) {
    const head = await reader.read(16);
    if (!head.subarray(0, 8).equals(NBD.IHAVEOPT)) return void raw.destroy();
    const option = head.readUInt32BE(8);
    const length = head.readUInt32BE(12);
    if (length > MAX_OPTION) return void raw.destroy();
    const payload = await reader.read(length);
    if (option === NBD.OPT_ABORT) {
      await send(socket, optionReply(option, NBD.REP_ACK));
      return void socket.end();
    }
    if (!secure) {
      if (option === NBD.OPT_EXPORT_NAME) return void raw.destroy();
      if (option !== NBD.OPT_STARTTLS) {
        await send(socket, optionReply(option, NBD.REP_ERR_TLS_REQD));
        continue;
      }
      if (length !== 0 || reader.pending > 0) {
        await send(socket, optionReply(option, NBD.REP_ERR_INVALID));
        continue;
      }
      await send(socket, optionReply(option, NBD.REP_ACK));
      reader.detach();
      const tlsSocket = new TLSSocket(raw, { isServer: true, secureContext: context });
      tlsSocket.on('error', () => raw.destroy());
      socket = tlsSocket;
      reader = new ByteReader(tlsSocket);
      tlsSocket.resume();
      secure = true;
      continue;
    }
    if (option === NBD.OPT_STARTTLS) await send(socket, optionReply(option, NBD.REP_ERR_INVALID));
    else if (option === NBD.OPT_LIST) await send(socket, optionReply(option, NBD.REP_ERR_POLICY));
    else if (option !== NBD.OPT_EXPORT_NAME) await send(socket, optionReply(option, NBD.REP_ERR_UNSUP));
    else return transmit(sim, socket, reader, payload.toString('utf8'));
  }
}

async function transmit(sim: SimState, socket: Duplex, reader: ByteReader, name: string): Promise<void> {
  const parsed = parseExportName(name);
  if (parsed === undefined || !sim.sessions.has(parsed.session)) return void socket.destroy();
  let vdi: string;
  try {
    vdi = sim.db.byUuid('VDI', parsed.uuid);
  } catch {
    return void socket.destroy();
  }
  if (sim.db.field<string>('VDI', vdi, 'type') === 'cbt_metadata') return void socket.destroy();
  const size = sim.db.field<number>('VDI', vdi, 'virtual_size');
  let fh: FileHandle;
  try {
    fh = await openVdiRead(sim.vdiPath(vdi));
  } catch {
    return void socket.destroy();
  }
  const vbd = attachToDom0(sim, vdi);
  try {
    const hello = Buffer.alloc(8 + 2 + 124);
    hello.writeBigUInt64BE(BigInt(size), 0);
    hello.writeUInt16BE(NBD.TRANSMISSION_FLAGS, 8);
    await send(socket, hello);
    for (;;) {
      const req = await reader.read(28);
      if (req.readUInt32BE(0) !== NBD.REQUEST_MAGIC) return void socket.destroy();
      // xapi-nbd parses flags and type as one 32-bit command: any flag makes it unknown
      const command = req.readUInt32BE(4);
      const handle = Buffer.from(req.subarray(8, 16));
      const offset = Number(req.readBigUInt64BE(16));
      const length = req.readUInt32BE(24);
      if (command === NBD.CMD_DISC) return void socket.end();
      if (command === NBD.CMD_WRITE) {
        if (length > MAX_READ) return void socket.destroy();
        await reader.read(length);
        await send(socket, simpleReply(NBD.EPERM, handle));
        continue;
      }
      const valid =
        command === NBD.CMD_READ &&
        offset % 512 === 0 &&
        length % 512 === 0 &&
        length <= MAX_READ &&
        offset + length <= size;
      if (!valid) {
        await send(socket, simpleReply(NBD.EINVAL, handle));
        continue;
      }
      const data = Buffer.alloc(length);
      let done = 0;
      while (done < length) {
        const { bytesRead } = await fh.read(data, done, length - done, offset + done);
        if (bytesRead === 0) break;
        done += bytesRead;
      }
      sim.nbdStats.record(parsed.uuid, offset, length);
      await send(socket, simpleReply(0, handle), data);
    }
  } finally {
    await fh.close();
    detachFromDom0(sim, vbd);
  }
}
