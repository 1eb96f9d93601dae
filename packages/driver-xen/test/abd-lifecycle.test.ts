import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AbdLease, type XenConnection } from '../src/index.js';
import { type AbdPool, startAbdPool } from './helpers/abd-pool.js';

/*
 * Issue 17, point 3: the delegate appliance's lifecycle against the simulator, whose appliances
 * run a real replikit-agent process at their address. Every test ends by listing the pool's
 * objects: no VBD plugged into an appliance, no appliance running unless the job keeps it.
 */

const MiB = 1024 * 1024;
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

const settings = (extra: { persistent?: boolean } = {}) => ({ ips: pool.ips, srs: [], ...extra });

async function failure(promise: Promise<unknown>): Promise<Error & { code?: string }> {
  try {
    await promise;
  } catch (error) {
    return error as Error & { code?: string };
  }
  throw new Error('expected a failure');
}

describe('the delegate appliance (ABD) lifecycle', () => {
  it('deploys an appliance from the image, starts it at the first address, plugs RO and RW VDIs its agent sees, unplugs and stops it at release', async () => {
    const snapshotVdi = await pool.makeVdi(2 * MiB);
    const replicaVdi = await pool.makeVdi(4 * MiB);
    const lease = await AbdLease.acquire(conn, settings());
    expect(lease.appliance.address).toEqual({ host: pool.ips[0], port: 7400 });
    const [appliance] = await pool.appliances();
    expect(appliance).toMatchObject({ uuid: lease.appliance.uuid, power: 'Running' });
    expect(pool.sim.appliance(appliance!.ref)?.address.host).toBe(pool.ips[0]);

    const ro = await lease.plug(snapshotVdi.ref, 'RO');
    const rw = await lease.plug(replicaVdi.ref, 'RW');
    const seen = await lease.target().getVM(lease.appliance.uuid);
    expect(seen.disks.map((d) => [d.id, d.size, (d.meta as { mode: string }).mode])).toEqual([
      [snapshotVdi.uuid, 2 * MiB, 'RO'],
      [replicaVdi.uuid, 4 * MiB, 'RW'],
    ]);
    expect((await pool.pluggedIntoAppliances()).sort()).toEqual([ro.vbd, rw.vbd].sort());

    await lease.release();
    expect(await pool.pluggedIntoAppliances()).toEqual([]);
    expect(await pool.applianceVbds()).toEqual([]);
    expect(await pool.appliances()).toEqual([{ ...appliance, power: 'Halted' }]);
    expect(pool.sim.appliance(appliance!.ref)).toBeUndefined();
    await lease.release(); // twice is harmless

    // The next run finds the halted appliance by its mark (no second clone) and starts it with a new key.
    const again = await AbdLease.acquire(conn, settings());
    expect(again.appliance.uuid).toBe(appliance!.uuid);
    expect(Buffer.from(again.appliance.psk.key).equals(Buffer.from(lease.appliance.psk.key))).toBe(false);
    expect((await pool.appliances()).length).toBe(1);
    await again.release();
    expect((await pool.appliances())[0]!.power).toBe('Halted');
  });

  it('a persistent appliance keeps running after release and the next run reuses it as it runs', async () => {
    const first = await AbdLease.acquire(conn, settings({ persistent: true }));
    await first.plug((await pool.makeVdi()).ref, 'RW');
    await first.release();
    const [kept] = await pool.appliances();
    expect(kept!.power).toBe('Running');
    expect(await pool.pluggedIntoAppliances()).toEqual([]);
    const pid = pool.sim.appliance(kept!.ref)!.pid;

    // A new lease (as a new process would) finds it running and talks to the same agent.
    const second = await AbdLease.acquire(conn, settings());
    expect(second.appliance.uuid).toBe(kept!.uuid);
    expect(second.appliance.startedHere).toBe(false);
    const vdi = await pool.makeVdi(MiB);
    await second.plug(vdi.ref, 'RW');
    expect((await second.target().getVM(kept!.uuid)).disks.map((d) => d.id)).toEqual([vdi.uuid]);
    expect(pool.sim.appliance(kept!.ref)!.pid).toBe(pid);
    // This job does not keep it: the last release stops it.
    await second.release();
    expect(await pool.appliances()).toEqual([{ ...kept, power: 'Halted' }]);
  });

  it('source and target on one pool share one appliance; the last release stops it', async () => {
    const other = await pool.connect();
    try {
      const [source, target] = await Promise.all([
        AbdLease.acquire(conn, settings()),
        AbdLease.acquire(other, settings()),
      ]);
      expect(target.appliance.uuid).toBe(source.appliance.uuid);
      expect((await pool.appliances()).length).toBe(1);
      await source.plug((await pool.makeVdi()).ref, 'RO');
      const rw = await target.plug((await pool.makeVdi()).ref, 'RW');
      await source.release();
      expect(await pool.pluggedIntoAppliances()).toEqual([rw.vbd]);
      expect((await pool.appliances())[0]!.power).toBe('Running');
      await target.release();
      expect(await pool.pluggedIntoAppliances()).toEqual([]);
      expect((await pool.appliances())[0]!.power).toBe('Halted');
    } finally {
      await other.close();
    }
  });

  it('a failed plug leaves no VBD; a run that fails after plugging leaves nothing plugged or running', async () => {
    const lease = await AbdLease.acquire(conn, settings());
    await lease.plug((await pool.makeVdi()).ref, 'RO');
    pool.sim.faults.failNext('VBD.plug', 'SR_BACKEND_FAILURE_46', '', 'the VDI is not available', '');
    const refused = await failure(lease.plug((await pool.makeVdi()).ref, 'RW'));
    expect(refused.code).toBe('E_DRIVER');
    expect(refused.message).toContain('SR_BACKEND_FAILURE_46');
    expect((await pool.applianceVbds()).length).toBe(1);
    // The run fails here; its finally releases the lease.
    await lease.release();
    expect(await pool.applianceVbds()).toEqual([]);
    expect((await pool.appliances()).map((a) => a.power)).toEqual(['Halted']);
  });

  it('an appliance that cannot start is left halted and the acquire fails with the reason', async () => {
    pool.sim.faults.failNext('VM.start', 'INTERNAL_ERROR', 'the hypervisor refused');
    const refused = await failure(AbdLease.acquire(conn, settings()));
    expect(refused.message).toContain('INTERNAL_ERROR');
    expect((await pool.appliances()).map((a) => a.power)).toEqual(['Halted']);
    // The next acquire starts it.
    const lease = await AbdLease.acquire(conn, settings());
    expect((await pool.appliances()).map((a) => a.power)).toEqual(['Running']);
    await lease.release();
  });

  it('no address left: every address of abd.ips is held by a running appliance', async () => {
    const lease = await AbdLease.acquire(conn, { ips: [pool.ips[0]!], srs: [], persistent: true });
    await lease.release();
    // The kept appliance runs with the only address; its record loses its key, so it cannot be reused.
    const [kept] = await pool.appliances();
    await pool.call('VM.remove_from_xenstore_data', kept!.ref, 'vm-data/replikit/psk');
    const refused = await failure(AbdLease.acquire(conn, { ips: [pool.ips[0]!], srs: [] }));
    expect(refused.code).toBe('E_DRIVER');
    expect(refused.message).toContain('every address of abd.ips');
    await pool.call('VM.hard_shutdown', kept!.ref);
  });

  it('VBD.unplug refused with DEVICE_DETACH_REJECTED or VDI_IN_USE is retried: the release still unplugs and destroys everything', async () => {
    const lease = await AbdLease.acquire(conn, settings());
    const a = await lease.plug((await pool.makeVdi()).ref, 'RO');
    const b = await lease.plug((await pool.makeVdi()).ref, 'RW');
    pool.sim.faults.failNext('VBD.unplug', 'DEVICE_DETACH_REJECTED', 'VBD', b.vbd, 'device in use by the guest');
    pool.sim.faults.failNext('VBD.unplug', 'VDI_IN_USE', a.vdi, 'unplug');
    await lease.release();
    expect(await pool.applianceVbds()).toEqual([]);
    expect((await pool.appliances()).map((x) => x.power)).toEqual(['Halted']);
  });
});

describe('after a killed run', () => {
  it('the next acquire unplugs and destroys the VBDs a dead process of this host left plugged; release then stops the appliance', async () => {
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
    const vbd = await new Promise<string>((resolve, reject) => {
      let out = '';
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        const match = /PLUGGED (\S+)\n/.exec(out);
        if (match) resolve(match[1]!);
      });
      void exited.then(() => reject(new Error('the child exited before it plugged')));
    });
    child.kill('SIGKILL');
    await exited;
    expect(await pool.pluggedIntoAppliances()).toEqual([vbd]);
    expect((await pool.appliances()).map((a) => a.power)).toEqual(['Running']);

    const lease = await AbdLease.acquire(conn, settings());
    expect(await pool.applianceVbds()).toEqual([]);
    // The VDI is free again: this run plugs it RW.
    await lease.plug(vdi.ref, 'RW');
    await lease.release();
    expect(await pool.applianceVbds()).toEqual([]);
    expect((await pool.appliances()).map((a) => a.power)).toEqual(['Halted']);
  });
});
