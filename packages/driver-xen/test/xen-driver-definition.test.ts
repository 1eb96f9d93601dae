import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BUILTIN_DRIVER_KINDS, DriverRegistry, isReplikitError } from '@replikit/core';
import { afterEach, describe, expect, it } from 'vitest';
import { XEN_SOURCE_CAPABILITIES, xenDriver } from '../src/index.js';
import { PASSWORD_ENV, startPool, type TestPool } from './helpers/xen-pool.js';

const parseError = (side: Record<string, unknown>): Error => {
  try {
    new DriverRegistry().register(xenDriver).parseOptions({ driver: 'xen', vm: 'web', ...side }, { side: 'source' });
  } catch (error) {
    return error as Error;
  }
  throw new Error('the options were accepted');
};

describe('xenDriver (the definition)', () => {
  let pool: TestPool | undefined;
  afterEach(async () => {
    await pool?.close();
    pool = undefined;
  });

  it("declares exactly core's built-in row for kind 'xen'; an instance declares the part built so far", () => {
    expect(xenDriver.kind).toBe('xen');
    expect(xenDriver.capabilities).toEqual(BUILTIN_DRIVER_KINDS.get('xen'));
    const row = BUILTIN_DRIVER_KINDS.get('xen')!;
    for (const m of XEN_SOURCE_CAPABILITIES.methods) expect(row.methods).toContain(m);
    for (const f of XEN_SOURCE_CAPABILITIES.formats) expect(row.formats).toContain(f);
  });

  it('refuses a clear password with one line naming the field, and asks for a reference', () => {
    const clear = parseError({ url: 'https://xen1.example', password: 'hunter2' });
    expect(isReplikitError(clear, 'E_JOB')).toBe(true);
    expect(clear.message).toMatch(/source\.password: a clear password is never accepted/);
    expect(clear.message).not.toContain('hunter2');
    expect(clear.message.split('\n')).toHaveLength(1);
    expect(parseError({ url: 'https://xen1.example' }).message).toMatch(/source\.passwordEnv: name the password/);
    expect(parseError({ url: 'https://xen1.example', passwordEnv: 'X', fingerprint: 'zz' }).message).toMatch(
      /source\.fingerprint: expected a SHA-256 fingerprint/,
    );
  });

  it('connects with the password from the named environment variable, and E_AUTH when it is unset', async () => {
    pool = await startPool();
    const registry = new DriverRegistry().register(xenDriver);
    const hv = await registry.create(
      { driver: 'xen', url: pool.sim.url, passwordEnv: PASSWORD_ENV },
      { side: 'source' },
    );
    try {
      expect(hv.kind).toBe('xen');
      expect(await hv.listVMs()).toEqual([]); // dom0 is not a VM to replicate
    } finally {
      await hv.close();
    }
    await expect(
      registry.create(
        { driver: 'xen', url: pool.sim.url, passwordEnv: 'REPLIKIT_TEST_UNSET_VARIABLE' },
        { side: 'source' },
      ),
    ).rejects.toMatchObject({ code: 'E_AUTH' });
  });

  it('reads user:password from a credentials file; a wrong password is E_AUTH', async () => {
    pool = await startPool();
    const good = join(pool.dir, 'good');
    const bad = join(pool.dir, 'bad');
    await writeFile(good, 'root:password\n');
    await writeFile(bad, 'root:wrong\n');
    const hv = await pool.driver({ passwordEnv: undefined, credentialsFile: good });
    await hv.close();
    await expect(pool.driver({ passwordEnv: undefined, credentialsFile: bad })).rejects.toMatchObject({
      code: 'E_AUTH',
    });
  });

  it('pins the TLS certificate by fingerprint; another fingerprint is refused before logging in', async () => {
    pool = await startPool({ https: true });
    const { X509Certificate } = await import('node:crypto');
    const fingerprint = new X509Certificate(pool.sim.tls!.cert).fingerprint256;
    const hv = await pool.driver({ allowUnauthorized: false, fingerprint });
    await hv.close();
    const other = fingerprint.replace(/^../, fingerprint.startsWith('00') ? '11' : '00');
    await expect(pool.driver({ allowUnauthorized: false, fingerprint: other })).rejects.toMatchObject({
      code: 'E_AUTH',
      message: expect.stringMatching(/not the pinned/),
    });
    // without either, the self-signed certificate is refused
    await expect(pool.driver({ allowUnauthorized: false })).rejects.toBeDefined();
  });

  it('warns when allowUnauthorized accepts any certificate', async () => {
    pool = await startPool({ https: true });
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.message);
    process.on('warning', onWarning);
    try {
      const hv = await pool.driver({ allowUnauthorized: true });
      await hv.close();
      await new Promise((resolve) => setImmediate(resolve));
    } finally {
      process.off('warning', onWarning);
    }
    expect(warnings.some((w) => /allowUnauthorized accepts any TLS certificate/.test(w))).toBe(true);
  });
});
