import { type AddressInfo, createServer, Socket } from 'node:net';

/**
 * A loopback TCP proxy to an HTTP server that drops the connection carrying the next request
 * whose bytes contain `marker` (once), before forwarding it: the call never reaches the server,
 * and the client sees its connection dropped.
 */
export async function startRpcCuttingProxy(port: number, marker: string) {
  let armed = true;
  let cuts = 0;
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = new Socket();
    sockets.add(client).add(upstream);
    upstream.connect(port, '127.0.0.1');
    client.on('data', (d: Buffer) => {
      if (armed && d.includes(marker)) {
        armed = false;
        cuts++;
        client.destroy();
        upstream.destroy();
        return;
      }
      upstream.write(d);
    });
    upstream.on('data', (d: Buffer) => client.write(d));
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    for (const s of [client, upstream]) {
      s.on('close', end);
      s.on('error', end);
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    cuts: () => cuts,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
