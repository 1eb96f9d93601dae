import net from 'node:net';
import type { Address } from '../../src/security.js';

/** What the proxy does to one connection: cut it after some bytes, or flip one byte. */
export interface Fault {
  /** Which way the fault applies: source ─► agent (`up`) or back (`down`). */
  direction: 'up' | 'down';
  /** Destroy both sockets once this many bytes went that way. */
  cutAfter?: number;
  /** XOR the byte at this offset of that direction's stream with 0xff. */
  flipAt?: number;
}

/**
 * A TCP proxy on 127.0.0.1 in front of `target`. Each new connection takes the next fault from
 * `faults` (none once they are used up), so a test arms exactly what it wants to break.
 */
export async function startFaultProxy(target: Address) {
  const faults: Fault[] = [];
  const sockets = new Set<net.Socket>();
  let connections = 0;
  const server = net.createServer((client) => {
    connections++;
    const fault = faults.shift();
    const upstream = net.connect(target.port, target.host);
    sockets.add(client);
    sockets.add(upstream);
    const kill = () => {
      client.destroy();
      upstream.destroy();
    };
    const pipe = (from: net.Socket, to: net.Socket, way: 'up' | 'down') => {
      let seen = 0;
      from.on('data', (chunk: Buffer) => {
        let out = chunk;
        if (fault && fault.direction === way) {
          if (fault.flipAt !== undefined && fault.flipAt >= seen && fault.flipAt < seen + chunk.length) {
            out = Buffer.from(chunk);
            out[fault.flipAt - seen]! ^= 0xff;
          }
          if (fault.cutAfter !== undefined && seen + chunk.length >= fault.cutAfter) {
            to.write(out.subarray(0, fault.cutAfter - seen), () => kill());
            seen += chunk.length;
            from.pause();
            return;
          }
        }
        seen += chunk.length;
        if (!to.write(out)) {
          from.pause();
          to.once('drain', () => from.resume());
        }
      });
      from.on('end', () => to.end());
      from.on('error', kill);
      from.on('close', () => {
        sockets.delete(from);
        to.destroy();
      });
    };
    pipe(client, upstream, 'up');
    pipe(upstream, client, 'down');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    address: { host: '127.0.0.1', port } as Address,
    faults,
    get connections() {
      return connections;
    },
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
