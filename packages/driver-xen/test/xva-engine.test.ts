import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DriverRegistry, defineDriver, FileStateStore, ReplicationEngine, type RunRecord } from '@replikit/core';
import { compareBytes, readWholeDisk, testPattern } from '@replikit/core/testing';
import { localTransport } from '@replikit/transport';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createXenDriver, XEN_KIND_CAPABILITIES, type XenDriver, xenDriverOptionsSchema } from '../src/index.js';
import { markOvaXml } from '../src/xva/ova-mark.js';
import { PASSWORD_ENV, startPool, type TestPool } from './helpers/xen-pool.js';

const MiB = 1024 * 1024;

/** The xen kind with its replica hooks on (`targetPreview`) until the target side lands. */
const xenPreview = defineDriver({
  kind: 'xen',
  capabilities: XEN_KIND_CAPABILITIES,
  options: xenDriverOptionsSchema,
  create: (options) => createXenDriver(options, { targetPreview: true }),
});

/**
 * Every VM, VDI and VBD of the pool, by uuid: what a run may have left behind. Left out: the dom0
 * VBD the NBD server attaches for each open connection (as xapi-nbd does), which it removes once
 * it has read the client's disconnect, after the client has moved on.
 */
async function objects(pool: TestPool): Promise<string[]> {
  const out: string[] = [];
  for (const cls of ['VM', 'VDI', 'VBD']) {
    const records = await pool.call<Record<string, { uuid: string; other_config?: Record<string, string> }>>(
      `${cls}.get_all_records`,
    );
    const kept = Object.values(records).filter((r) => !(cls === 'VBD' && r.other_config?.['xapi-sim'] === 'nbd'));
    out.push(...kept.map((r) => `${cls} ${r.uuid}`));
  }
  return out.sort();
}

/** The metadata-only VDIs a revert keeps as the fingerprint's CBT base of `replica`'s disks. */
async function cbtBases(pool: TestPool, replica: string): Promise<string[]> {
  const records =
    await pool.call<Record<string, { uuid: string; other_config: Record<string, string> }>>('VDI.get_all_records');
  return Object.values(records)
    .filter((r) => r.other_config['replikit:cbt-base-of']?.startsWith(`${replica}/`))
    .map((r) => `VDI ${r.uuid}`);
}

describe('method xva, xen ► xen against the simulator (whole VM exported, staged, imported)', () => {
  let pool: TestPool;
  let dir: string;
  let xen: XenDriver;
  beforeEach(async () => {
    pool = await startPool();
    dir = await mkdtemp(join(tmpdir(), 'rk-xva-'));
    xen = await pool.driver({}, { targetPreview: true });
  });
  afterEach(async () => {
    await xen.close();
    await pool.close();
    await rm(dir, { recursive: true, force: true });
  });

  function engineFor(vm: string, target: Record<string, unknown> = {}) {
    const engine = new ReplicationEngine({
      stateStore: new FileStateStore(join(dir, 'state')),
      drivers: new DriverRegistry().register(xenPreview),
      transport: localTransport(),
    });
    const side = { driver: 'xen', url: pool.sim.url, passwordEnv: PASSWORD_ENV };
    const job = {
      name: 'xva-job',
      source: { ...side, vm },
      target: { ...side, abd: { ips: ['127.0.0.60'] }, ...target },
      method: 'xva',
    };
    return { engine, job };
  }

  /** The replica's disks equal the run's source snapshot, byte for byte. */
  async function expectReplicaEqualsSnapshot(record: RunRecord): Promise<void> {
    const replica = record.replica!;
    expect(await xen.replicaMark(replica)).toBe('ready');
    for (const [i, disk] of record.snapshot!.disks.entries()) {
      const source = await readWholeDisk(xen, disk);
      expect(compareBytes(await readWholeDisk(xen, replica.disks[i]!), source)).toBe('equal');
    }
  }

  it('full, guest writes, full again: the replica equals the source snapshot after each run', async () => {
    const name = 'db "x" $(y)';
    const vm = await pool.makeVM(name, [4 * MiB, 2 * MiB]);
    const disks = (await xen.getVM(vm.uuid)).disks;
    const write = (disk: number, offset: number, length: number, seed: number) =>
      pool.writeGuest(vm.uuid, disks[disk]!.id, offset, testPattern(seed, length));
    await write(0, 4095, 70_000, 1);
    await write(1, 2 * MiB - 512, 512, 2);
    const { engine, job } = engineFor(name);
    try {
      const first = await engine.run(job);
      expect(first.outcome, JSON.stringify(first.error)).toBe('completed');
      expect(first.disks.map((d) => d.mode)).toEqual(['full', 'full']);
      expect(first.disks[0]!.reason?.code).toBe('METHOD_ALWAYS_FULL');
      expect(first.stats.bytesRead).toBeGreaterThan(0);
      await expectReplicaEqualsSnapshot(first);
      const afterFirst = await objects(pool);

      await write(0, 3 * MiB + 7, 40_000, 3);
      await write(1, 0, 4096, 4);
      const second = await engine.run(job);
      expect(second.outcome, JSON.stringify(second.error)).toBe('completed');
      expect(second.replica!.id).toBe(first.replica!.id);
      expect(second.disks.map((d) => d.mode)).toEqual(['full', 'full']);
      await expectReplicaEqualsSnapshot(second);
      expect((await xen.listRestorePoints(second.replica!)).length).toBe(2);
      // Nothing imported is left beside the replica: only the snapshots and points of the new run differ.
      const leftovers = await pool.call<Record<string, Record<string, unknown>>>('VM.get_all_records');
      expect(Object.values(leftovers).filter((v) => 'replikit:xva-import' in (v.other_config as object))).toEqual([]);
      expect((await objects(pool)).length).toBeGreaterThanOrEqual(afterFirst.length);
    } finally {
      await engine.close();
    }
  });

  it("spools in the target's spoolDir, leaves nothing there, and removes the spool a killed run left", async () => {
    await pool.makeVM('spooled', [2 * MiB]);
    const spoolDir = join(dir, 'spool');
    const elsewhere = join(dir, 'elsewhere');
    await mkdir(elsewhere, { recursive: true });
    await writeFile(join(elsewhere, 'keep.txt'), 'not a spool');
    // A process that has exited: its spool is stale. This process's own spool is in use; a link
    // named like a stale spool is not a folder of ours and is never followed.
    const dead = spawnSync(process.execPath, ['-e', '']).pid!;
    const stale = join(spoolDir, `replikit-xva-${dead}-Ab12Cd`);
    await mkdir(stale, { recursive: true });
    await writeFile(join(stale, 'export.xva'), Buffer.alloc(4096, 1));
    const live = join(spoolDir, `replikit-xva-${process.pid}-Ef34Gh`);
    await mkdir(live);
    await symlink(elsewhere, join(spoolDir, `replikit-xva-${dead}-Ij56Kl`));
    const { engine, job } = engineFor('spooled', { spoolDir });
    try {
      const record = await engine.run(job);
      expect(record.outcome, JSON.stringify(record.error)).toBe('completed');
      await expectReplicaEqualsSnapshot(record);
    } finally {
      await engine.close();
    }
    expect((await readdir(spoolDir)).sort()).toEqual(
      [`replikit-xva-${dead}-Ij56Kl`, `replikit-xva-${process.pid}-Ef34Gh`].sort(),
    );
    expect(await readFile(join(elsewhere, 'keep.txt'), 'utf8')).toBe('not a spool');
  });

  it('too little staging space on the target SR is refused (xva-needs-staging) before anything is touched', async () => {
    const vm = await pool.makeVM('big', [8 * MiB]);
    const small = await pool.sim.addSr('small', 4 * MiB);
    const srUuid = await pool.call<string>('SR.get_uuid', small);
    const before = await objects(pool);
    const { engine, job } = engineFor('big', { sr: srUuid });
    try {
      await expect(engine.run(job)).rejects.toMatchObject({
        code: 'E_RULE',
        message: expect.stringMatching(/xva-needs-staging/),
      });
      expect(await objects(pool)).toEqual(before);
    } finally {
      await engine.close();
    }
    expect(vm.uuid).toBeTruthy();
  });

  it('a failed import leaves no imported VM or disk behind, and the replica keeps its version', async () => {
    const vm = await pool.makeVM('web', [4 * MiB]);
    const disk = (await xen.getVM(vm.uuid)).disks[0]!;
    await pool.writeGuest(vm.uuid, disk.id, 0, testPattern(9, 8192));
    const { engine, job } = engineFor('web');
    try {
      const first = await engine.run(job);
      expect(first.outcome, JSON.stringify(first.error)).toBe('completed');
      const before = await objects(pool);
      await pool.writeGuest(vm.uuid, disk.id, 0, testPattern(10, 8192));
      // The export is cut after 1 MiB: the import of the truncated XVA fails on the pool.
      pool.sim.faults.dropNextExportAfter = MiB;
      await expect(engine.run(job)).rejects.toMatchObject({
        code: 'E_DRIVER',
        message: expect.stringMatching(/import/),
      });
      // New objects may only be the source's snapshots and the replica's own disks (a rollback
      // reverts them to its restore point: a clone, and a CBT base for the fingerprint); nothing
      // imported remains.
      const after = (await objects(pool)).filter((o) => !before.includes(o));
      const allowed = [
        ...(await vmTree(pool, vm.uuid)),
        ...(await vmTree(pool, first.replica!.id)),
        ...(await cbtBases(pool, first.replica!.id)),
      ];
      expect(after.filter((o) => !allowed.includes(o))).toEqual([]);
      const vdis = await pool.call<Record<string, { other_config: object }>>('VDI.get_all_records');
      expect(Object.values(vdis).filter((v) => 'replikit:pending-of' in v.other_config)).toEqual([]);
      await expectReplicaEqualsSnapshot(first);
    } finally {
      await engine.close();
    }
  });

  it('a run killed after its import (a marked VM, some disks already pending) leaves nothing once the replica is claimed again', async () => {
    const vm = await pool.makeVM('app', [2 * MiB]);
    const disk = (await xen.getVM(vm.uuid)).disks[0]!;
    await pool.writeGuest(vm.uuid, disk.id, MiB, testPattern(11, 4096));
    const { engine, job } = engineFor('app');
    try {
      const first = await engine.run(job);
      expect(first.outcome, JSON.stringify(first.error)).toBe('completed');
      const before = await objects(pool);
      // What a process killed between PUT /import and handing the disks over leaves: the VM the
      // import made (born marked, through its ova.xml), one of its disks already marked pending.
      const exported = await xen.exportVm(first.snapshot!);
      const chunks: Uint8Array[] = [];
      for await (const c of markOvaXml(exported.body, { 'replikit:xva-import': `${first.replica!.id}/killed-run` })) {
        chunks.push(c);
      }
      const xva = Buffer.concat(chunks);
      await xen.connection.put(
        '/import',
        {},
        (async function* () {
          yield xva;
        })(),
        xva.length,
      );
      const vms =
        await pool.call<Record<string, { other_config: Record<string, string>; VBDs: string[] }>>('VM.get_all_records');
      const leftover = Object.values(vms).find((v) => v.other_config['replikit:xva-import'] !== undefined)!;
      const leftoverVdi = await pool.call<string>('VBD.get_VDI', leftover.VBDs[0]);
      await pool.call('VDI.add_to_other_config', leftoverVdi, 'replikit:pending-of', `${first.replica!.id}/0`);
      await pool.call('VDI.add_to_other_config', leftoverVdi, 'replikit:pending-run', 'killed-run');
      expect((await objects(pool)).length).toBeGreaterThan(before.length);

      await pool.writeGuest(vm.uuid, disk.id, 0, testPattern(12, 4096));
      const next = await engine.run(job);
      expect(next.outcome, JSON.stringify(next.error)).toBe('completed');
      await expectReplicaEqualsSnapshot(next);
      const after = (await objects(pool)).filter((o) => !before.includes(o));
      const allowed = [...(await vmTree(pool, vm.uuid)), ...(await vmTree(pool, first.replica!.id))];
      expect(after.filter((o) => !allowed.includes(o))).toEqual([]);
    } finally {
      await engine.close();
    }
  });

  it("importVm itself refuses an SR without the VM's size free (E_RULE), touching nothing", async () => {
    const vm = await pool.makeVM('wide', [6 * MiB]);
    const small = await pool.sim.addSr('small', 8 * MiB);
    const target = await pool.driver({ sr: await pool.call<string>('SR.get_uuid', small) }, { targetPreview: true });
    try {
      const source = await xen.getVM(vm.uuid);
      const replica = await target.ensureReplica({
        name: 'wide-job',
        source,
        disks: source.disks.map((d) => ({ sourceDiskId: d.id, size: d.size })),
      });
      const snapshot = await xen.snapshot(vm.uuid, 'replikit-test');
      const before = await objects(pool);
      const exported = await xen.exportVm(snapshot);
      try {
        await expect(target.importVm(replica, exported, { runId: 'r1' })).rejects.toMatchObject({
          code: 'E_RULE',
          details: { violations: [expect.objectContaining({ ruleId: 'xva-needs-staging' })] },
        });
      } finally {
        await exported.close();
      }
      expect(await objects(pool)).toEqual(before);
    } finally {
      await target.close();
    }
  });
});

/** VM `uuid` and its snapshots, with their VBDs and VDIs. */
async function vmTree(pool: TestPool, uuid: string): Promise<string[]> {
  const vm = await pool.call<string>('VM.get_by_uuid', uuid);
  const out: string[] = [];
  for (const ref of [vm, ...(await pool.call<string[]>('VM.get_snapshots', vm))]) {
    out.push(`VM ${await pool.call<string>('VM.get_uuid', ref)}`);
    for (const vbd of await pool.call<string[]>('VM.get_VBDs', ref)) {
      out.push(`VBD ${await pool.call<string>('VBD.get_uuid', vbd)}`);
      out.push(`VDI ${await pool.call<string>('VDI.get_uuid', await pool.call<string>('VBD.get_VDI', vbd))}`);
    }
  }
  return out;
}
