import { type AddressInfo, createServer, type Server, Socket } from 'node:net';

/**
 * A TCP proxy on loopback that forwards to `port` and cuts the first connection it serves after
 * `cutAfter` bytes from the server: a link that drops mid-export. Later connections pass whole.
 */
export async function startCuttingProxy(
  port: number,
  cutAfter: number,
): Promise<{ port: number; cuts: () => number; connections: () => number; close(): Promise<void> }> {
  let cuts = 0;
  let connections = 0;
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const first = connections++ === 0;
    const upstream = new Socket();
    sockets.add(client);
    sockets.add(upstream);
    let seen = 0;
    upstream.connect(port, '127.0.0.1');
    client.on('data', (d: Buffer) => upstream.write(d));
    upstream.on('data', (d: Buffer) => {
      seen += d.length;
      if (first && seen > cutAfter) {
        cuts++;
        client.destroy();
        upstream.destroy();
        return;
      }
      client.write(d);
    });
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('close', end);
    upstream.on('close', end);
    client.on('error', end);
    upstream.on('error', end);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    cuts: () => cuts,
    connections: () => connections,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
