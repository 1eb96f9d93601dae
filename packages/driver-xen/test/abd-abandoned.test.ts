import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AbdLease, type XenConnection } from '../src/index.js';
import { type AbdPool, startAbdPool } from './helpers/abd-pool.js';

/*
 * Issue 17, crash safety (found by the crash matrix): an engine killed after its transfer (in
 * its commit) left the non-persistent appliance running, and the resume, which writes nothing,
 * never acquired the appliance, so nothing stopped it. A driver with an `abd` section that
 * closes without having used the appliance now stops one whose last holder was a process of
 * this host that died; an appliance a live process holds, or a persistent one, keeps running.
 */

let pool: AbdPool;
let conn: XenConnection;

beforeEach(async () => {
  pool = await startAbdPool();
  conn = await pool.connect();
});
afterEach(async () => {
  await conn.close();
  await pool.close();
});

/** A process that acquires the appliance, plugs a VDI into it, and is SIGKILLed. Returns the VDI. */
async function killedHolder(): Promise<string> {
  const vdi = await pool.makeVdi();
  const tsx = join(dirname(createRequire(import.meta.url).resolve('tsx/package.json')), 'dist', 'loader.mjs');
  const child = spawn(
    process.execPath,
    [
      '--conditions=@replikit/source',
      '--import',
      pathToFileURL(tsx).href,
      join(dirname(fileURLToPath(import.meta.url)), 'helpers', 'abd-crash-main.ts'),
      pool.sim.url,
      vdi.ref,
      ...pool.ips,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, NODE_OPTIONS: '' } },
  );
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('PLUGGED ')) resolve();
    });
    void exited.then(() => reject(new Error('the child exited before it plugged')));
  });
  child.kill('SIGKILL');
  await exited;
  expect((await pool.appliances()).map((a) => a.power)).toEqual(['Running']);
  return vdi.ref;
}

const powers = async () => (await pool.appliances()).map((a) => a.power);

describe('an appliance left running by a killed run', () => {
  for (const side of ['target', 'source'] as const) {
    it(`is stopped when a ${side} driver with an abd section closes without using it (a resume that writes nothing)`, async () => {
      await killedHolder();
      const driver = await pool.driver({ abd: { ips: pool.ips } }, { side, method: side === 'source' ? 'abd' : 'cbt' });
      await driver.close();
      expect(await pool.applianceVbds()).toEqual([]);
      expect(await powers()).toEqual(['Halted']);
    });
  }

  it('a driver with an abd section unplugs what the dead process left plugged as it opens: the resume can destroy that VDI', async () => {
    const vdi = await killedHolder();
    const driver = await pool.driver({ abd: { ips: pool.ips } }, { side: 'target', method: 'cbt' });
    try {
      expect(await pool.pluggedIntoAppliances()).toEqual([]);
      await pool.call('VDI.destroy', vdi); // what a rollback does with a pending clone
    } finally {
      await driver.close();
    }
  });

  it('keeps running while a live process holds it', async () => {
    await killedHolder();
    const lease = await AbdLease.acquire(conn, { ips: pool.ips, srs: [] }); // this process, alive
    const driver = await pool.driver({ abd: { ips: pool.ips } }, { side: 'target', method: 'cbt' });
    await driver.close();
    expect(await powers()).toEqual(['Running']);
    await lease.release();
    expect(await powers()).toEqual(['Halted']);
  });

  it('a persistent appliance keeps running after a driver that did not use it closes', async () => {
    const lease = await AbdLease.acquire(conn, { ips: pool.ips, srs: [], persistent: true });
    await lease.release();
    const driver = await pool.driver({ abd: { ips: pool.ips } }, { side: 'target', method: 'cbt' });
    await driver.close();
    expect(await powers()).toEqual(['Running']);
    await pool.call('VM.hard_shutdown', (await pool.appliances())[0]!.ref);
  });
});
