import { type AddressInfo, createServer, type Server, type Socket } from 'node:net';
import { TLSSocket } from 'node:tls';

/** What the hostile server answers to the `n`-th connection's READ: a whole simple reply. */
export type HostileReply = (connection: number, handle: Buffer, offset: number, length: number) => Buffer;

/** Exact-length reads for the fake server (it is not the code under test). */
function reader(socket: Socket | TLSSocket) {
  let queued = Buffer.alloc(0);
  let wake: (() => void) | undefined;
  let ended = false;
  socket.on('data', (d: Buffer) => {
    queued = Buffer.concat([queued, d]);
    wake?.();
  });
  socket.on('close', () => {
    ended = true;
    wake?.();
  });
  return {
    async read(n: number): Promise<Buffer> {
      while (queued.length < n) {
        if (ended) throw new Error('closed');
        await new Promise<void>((resolve) => (wake = resolve));
      }
      const out = queued.subarray(0, n);
      queued = queued.subarray(n);
      return out;
    },
    stop() {
      socket.removeAllListeners('data');
    },
  };
}

/**
 * A fake xapi-nbd on loopback (fixed newstyle, STARTTLS, EXPORT_NAME, an export of `size` bytes)
 * whose READ replies come from `reply`: a server that breaks the protocol, for tests.
 */
export async function startHostileNbdServer(
  tls: { key: string; cert: string },
  size: number,
  reply: HostileReply,
): Promise<{ port: number; connections: () => number; close(): Promise<void> }> {
  let count = 0;
  const sockets = new Set<Socket>();
  const serve = async (raw: Socket, index: number) => {
    const greeting = Buffer.alloc(18);
    greeting.writeBigUInt64BE(0x4e42444d41474943n, 0);
    greeting.writeBigUInt64BE(0x49484156454f5054n, 8);
    greeting.writeUInt16BE(1, 16);
    raw.write(greeting);
    const plain = reader(raw);
    await plain.read(4 + 16); // client flags, STARTTLS
    const ack = Buffer.alloc(20);
    ack.writeBigUInt64BE(0x3e889045565a9n, 0);
    ack.writeUInt32BE(5, 8);
    ack.writeUInt32BE(1, 12);
    raw.write(ack);
    plain.stop();
    const secure = new TLSSocket(raw, { isServer: true, key: tls.key, cert: tls.cert });
    secure.on('error', () => raw.destroy());
    const r = reader(secure);
    const option = await r.read(16);
    await r.read(option.readUInt32BE(12)); // the export name
    const hello = Buffer.alloc(134);
    hello.writeBigUInt64BE(BigInt(size), 0);
    hello.writeUInt16BE(1, 8);
    secure.write(hello);
    for (;;) {
      const request = await r.read(28);
      if (request.readUInt32BE(4) !== 0) return void secure.end();
      secure.write(
        reply(index, request.subarray(8, 16), Number(request.readBigUInt64BE(16)), request.readUInt32BE(24)),
      );
    }
  };
  const server: Server = createServer((raw) => {
    sockets.add(raw);
    raw.on('close', () => sockets.delete(raw));
    raw.on('error', () => raw.destroy());
    serve(raw, count++).catch(() => raw.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    connections: () => count,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
