import { X509Certificate } from 'node:crypto';
import { createServer as createTcpServer, type Server, type Socket, connect as tcpConnect } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';
import { isReplikitError } from '@replikit/core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { XenConnection } from '../src/index.js';
import { PASSWORD_ENV, startPool, type TestPool } from './helpers/xen-pool.js';

/*
 * A pinned certificate must guard every connection that carries the password or the session, not
 * only a first look at the pool. A router on loopback sends connections either to the pool or to
 * an impostor with another certificate (what a man in the middle does after letting a first
 * check through); the impostor records every byte it receives after its TLS handshake.
 */

interface Router {
  url: string;
  /** Where the next connections go (`first-to-pool`: this one to the pool, the next ones not). */
  route: 'pool' | 'impostor' | 'first-to-pool';
  /** Application bytes the impostor received. */
  heard: Buffer[];
  close(): Promise<void>;
}

async function listen(server: Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as { port: number }).port;
}

async function startRouter(pool: TestPool, impostorTls: { key: string; cert: string }): Promise<Router> {
  const poolPort = Number(new URL(pool.sim.url).port);
  const sockets = new Set<Socket>();
  const heard: Buffer[] = [];
  const impostor = createTlsServer(impostorTls, (socket) => {
    sockets.add(socket);
    socket.on('data', (chunk: Buffer) => {
      heard.push(chunk);
      socket.destroy(); // what it heard is enough; the client sees a dropped connection
    });
    socket.on('error', () => undefined);
  });
  const impostorPort = await listen(impostor);
  const router: Router = {
    url: '',
    route: 'pool',
    heard,
    async close() {
      for (const socket of sockets) socket.destroy();
      await Promise.all([front, impostor].map((s) => new Promise((resolve) => s.close(resolve))));
    },
  };
  const front = createTcpServer((client) => {
    const toPool = router.route !== 'impostor';
    if (router.route === 'first-to-pool') router.route = 'impostor';
    const upstream = tcpConnect(toPool ? poolPort : impostorPort, '127.0.0.1');
    sockets.add(client).add(upstream);
    for (const [a, b] of [
      [client, upstream],
      [upstream, client],
    ] as const) {
      a.on('error', () => b.destroy());
      a.on('close', () => b.destroy());
      a.pipe(b);
    }
  });
  router.url = `https://127.0.0.1:${await listen(front)}`;
  return router;
}

describe('a pinned pool certificate guards every connection', () => {
  let pool: TestPool;
  let router: Router;
  let fingerprint: string;

  beforeEach(async () => {
    const other = await startPool({ https: true });
    const impostorTls = { key: other.sim.tls!.key, cert: other.sim.tls!.cert };
    await other.close();
    pool = await startPool({ https: true });
    fingerprint = new X509Certificate(pool.sim.tls!.cert).fingerprint256;
    router = await startRouter(pool, impostorTls);
  });
  afterEach(async () => {
    await router.close();
    await pool.close();
  });

  const open = () =>
    XenConnection.open({
      url: router.url,
      user: 'root',
      passwordEnv: PASSWORD_ENV,
      fingerprint,
      retry: { attempts: 1 },
      onWarning: () => undefined,
    });

  it('the login: the first check reaches the pool, the client is diverted; E_AUTH and the impostor hears nothing', async () => {
    // The pin check's connection goes to the pool, every later one to the impostor.
    router.route = 'first-to-pool';
    const opening = open();
    const error = await opening.then(
      async (conn) => {
        await conn.close();
        return undefined;
      },
      (e: unknown) => e as Error,
    );
    expect(Buffer.concat(router.heard).toString('latin1')).toBe('');
    expect(error, 'the connection opened through the impostor').toBeDefined();
    expect(String(error)).toMatch(/not the pinned/);
    expect(isReplikitError(error, 'E_AUTH') || isReplikitError((error as Error).cause, 'E_AUTH')).toBe(true);
  });

  it('with the pool itself at the end of every connection, a pinned connection logs in and reads a raw export', async () => {
    const vm = await pool.makeVM('pinned', [1024 * 1024]);
    const vdis = await pool.call<string[]>('VM.get_VBDs', vm.ref);
    const vdi = await pool.call<string>('VBD.get_VDI', vdis[0]);
    const conn = await open();
    try {
      const res = await conn.get('/export_raw_vdi', { vdi, format: 'raw' });
      let bytes = 0;
      for await (const chunk of res) bytes += (chunk as Buffer).length;
      expect(bytes).toBe(1024 * 1024);
    } finally {
      await conn.close();
    }
  });

  it("the driver's own HTTPS requests (raw exports, imports) check the pin too", async () => {
    const conn = await open();
    try {
      router.route = 'impostor';
      const error = await conn.get('/export_raw_vdi', { vdi: 'OpaqueRef:none', format: 'raw' }).then(
        (res) => {
          res.destroy();
          return undefined;
        },
        (e: unknown) => e as Error,
      );
      expect(Buffer.concat(router.heard).toString('latin1')).toBe('');
      expect(String(error)).toMatch(/not the pinned/);
    } finally {
      router.route = 'pool';
      await conn.close();
    }
  });
});
