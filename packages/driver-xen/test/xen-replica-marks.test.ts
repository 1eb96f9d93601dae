import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DriverRegistry, FileStateStore, ReplicationEngine } from '@replikit/core';
import { localTransport } from '@replikit/transport';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { xenDriver } from '../src/index.js';
import { PASSWORD_ENV, startPool, type TestPool } from './helpers/xen-pool.js';

/*
 * What a user sees of a replica on the target pool (XenCenter, `xe vm-list`): the VM named as the
 * job's target.replicaName says (else `<vm>-replica`), and its other_config naming the job that
 * writes it and its method, not a default.
 */

const MiB = 1024 * 1024;

describe('the replica VM a job makes: its name and marks', () => {
  let pool: TestPool;
  let dir: string;
  let engine: ReplicationEngine;
  beforeAll(async () => {
    pool = await startPool();
    dir = await mkdtemp(join(tmpdir(), 'rk-xen-marks-'));
    engine = new ReplicationEngine({
      stateStore: new FileStateStore(join(dir, 'state')),
      drivers: new DriverRegistry().register(xenDriver),
      ruleSets: [],
      transport: localTransport(),
    });
  });
  afterAll(async () => {
    await engine?.close();
    await pool?.close();
    await rm(dir, { recursive: true, force: true });
  });

  const replicaRecord = async (uuid: string) =>
    pool.call<Record<string, unknown>>('VM.get_record', await pool.call<string>('VM.get_by_uuid', uuid));

  for (const method of ['cbt', 'xva'] as const) {
    it(`${method}: named by target.replicaName, marked with the job's name and method`, async () => {
      await pool.makeVM(`marks-${method}`, [MiB + 512]);
      const xen = { driver: 'xen', url: pool.sim.url, passwordEnv: PASSWORD_ENV };
      const record = await engine.run({
        name: `nightly-${method}`,
        source: { ...xen, vm: `marks-${method}` },
        target: { ...xen, replicaName: `dr-copy-${method}` },
        method,
      });
      expect(record.outcome, JSON.stringify(record.error)).toBe('completed');
      const vm = await replicaRecord(record.replica!.id);
      expect(vm.name_label).toBe(`dr-copy-${method}`);
      expect(vm.other_config).toMatchObject({
        'replikit:replica': `dr-copy-${method}`,
        'replikit:job': `nightly-${method}`,
        'replikit:method': method,
      });
    });
  }

  it('without a replicaName the replica VM is <vm>-replica', async () => {
    await pool.makeVM('plain', [MiB]);
    const xen = { driver: 'xen', url: pool.sim.url, passwordEnv: PASSWORD_ENV };
    const record = await engine.run({
      name: 'plain-job',
      source: { ...xen, vm: 'plain' },
      target: xen,
      method: 'qhybrid',
    });
    expect(record.outcome, JSON.stringify(record.error)).toBe('completed');
    const vm = await replicaRecord(record.replica!.id);
    expect(vm.name_label).toBe('plain-replica');
    expect(vm.other_config).toMatchObject({ 'replikit:job': 'plain-job', 'replikit:method': 'qhybrid' });
  });
});
