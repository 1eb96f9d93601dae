import { X509Certificate } from 'node:crypto';
import { createServer } from 'node:net';
import { DriverRegistry, isReplikitError } from '@replikit/core';
import { afterEach, describe, expect, it } from 'vitest';
import { XenConnection, xenDriver } from '../src/index.js';
import { PASSWORD_ENV, startPool, type TestPool } from './helpers/xen-pool.js';

/*
 * What a user sees when a job's connection to a pool is wrong: one line that says what is wrong
 * (never "XAPI answered ECONNREFUSED()": XAPI said nothing), and no pin that silently checks
 * nothing.
 */

/** A loopback port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

const open = (url: string, extra: Partial<Parameters<typeof XenConnection.open>[0]> = {}) =>
  XenConnection.open({
    url,
    user: 'root',
    passwordEnv: PASSWORD_ENV,
    retry: { attempts: 1 },
    onWarning: () => undefined,
    ...extra,
  });

/** What `opening` was rejected with (it must be rejected). */
async function failure(opening: Promise<XenConnection>): Promise<Error> {
  const result = await opening.catch((e: unknown) => e as Error);
  if (result instanceof XenConnection) {
    await result.close();
    throw new Error('the connection opened');
  }
  return result;
}

describe('xen connection errors, as a user meets them', () => {
  let pool: TestPool | undefined;
  afterEach(async () => {
    await pool?.close();
    pool = undefined;
  });

  it('a fingerprint with an http:// url is refused by the schema (it would pin nothing)', () => {
    const parse = () =>
      new DriverRegistry()
        .register(xenDriver)
        .parseOptions(
          { driver: 'xen', vm: 'web', url: 'http://xen1.example', passwordEnv: 'X', fingerprint: 'ab'.repeat(32) },
          { side: 'source' },
        );
    expect(parse).toThrow(/source\.fingerprint: a fingerprint pins a TLS certificate: it needs an https:\/\/ url/);
    try {
      parse();
    } catch (error) {
      expect(isReplikitError(error, 'E_JOB')).toBe(true);
      expect((error as Error).message.split('\n')).toHaveLength(1);
    }
  });

  it('nothing listening at the url: "cannot reach the pool", naming the address, not an XAPI answer', async () => {
    process.env[PASSWORD_ENV] = 'password';
    const port = await closedPort();
    const error = await failure(open(`http://127.0.0.1:${port}`));
    expect(isReplikitError(error, 'E_DRIVER')).toBe(true);
    expect(error.message).toMatch(new RegExp(`logging in to 127\\.0\\.0\\.1:${port}: cannot reach the pool \\(`));
    expect(error.message).toContain('ECONNREFUSED');
    expect(error.message).not.toMatch(/XAPI answered/);
    expect(error.message.split('\n')).toHaveLength(1);
  });

  it('a host that does not resolve: "cannot reach the pool"', async () => {
    process.env[PASSWORD_ENV] = 'password';
    const error = await failure(open('https://replikit-no-such-pool.invalid'));
    expect(isReplikitError(error, 'E_DRIVER')).toBe(true);
    expect(error.message).toMatch(/logging in to replikit-no-such-pool\.invalid: cannot reach the pool \(/);
    expect(error.message).not.toMatch(/XAPI answered/);
  });

  it("the pool's self-signed certificate without a pin: E_AUTH naming fingerprint and allowUnauthorized", async () => {
    pool = await startPool({ https: true });
    const error = await failure(open(pool.sim.url));
    expect(isReplikitError(error, 'E_AUTH')).toBe(true);
    expect(error.message).toMatch(/TLS certificate is not trusted \(.*DEPTH_ZERO_SELF_SIGNED_CERT\)/);
    expect(error.message).toMatch(/pin it with fingerprint, or set allowUnauthorized/);
    expect(error.message).not.toMatch(/XAPI answered/);
  });

  it('pinning the certificate of a pool addressed by IP prints no TLS deprecation warning', async () => {
    pool = await startPool({ https: true });
    expect(new URL(pool.sim.url).hostname).toBe('127.0.0.1');
    const warnings: Error[] = [];
    const onWarning = (w: Error) => warnings.push(w);
    process.on('warning', onWarning);
    try {
      const fingerprint = new X509Certificate(pool.sim.tls!.cert).fingerprint256;
      const other = fingerprint.replace(/^../, fingerprint.startsWith('00') ? '11' : '00');
      const conn = await open(pool.sim.url, { fingerprint });
      await conn.close();
      await expect(open(pool.sim.url, { fingerprint: other })).rejects.toMatchObject({ code: 'E_AUTH' });
      await new Promise((resolve) => setImmediate(resolve));
    } finally {
      process.off('warning', onWarning);
    }
    expect(warnings.map((w) => `${(w as { code?: string }).code}: ${w.message}`)).toEqual([]);
  });
});
