import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DriverRegistry, FileStateStore, type Hypervisor, ReplicationEngine, type RunRecord } from '@replikit/core';
import { compareBytes, readWholeDisk } from '@replikit/core/testing';
import { createFileDriver, fileDriver } from '@replikit/driver-file';
import { localTransport } from '@replikit/transport';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createXenDriver, type XenDriver, xenDriver, xenDriverOptionsSchema } from '../src/index.js';

// Live mode: the same checks against a real pool, skipped unless REPLIKIT_XEN_URL is set (see
// docs/xenserver.md). Everywhere else the driver is tested against @replikit/xapi-sim.
const env = process.env;
const live = env.REPLIKIT_XEN_URL !== undefined && env.REPLIKIT_XEN_VM !== undefined;
const side = () => ({
  driver: 'xen',
  url: env.REPLIKIT_XEN_URL!,
  user: env.REPLIKIT_XEN_USER ?? 'root',
  passwordEnv: env.REPLIKIT_XEN_PASSWORD_ENV ?? 'REPLIKIT_XEN_PASSWORD',
  ...(env.REPLIKIT_XEN_FINGERPRINT ? { fingerprint: env.REPLIKIT_XEN_FINGERPRINT } : { allowUnauthorized: true }),
});

describe.skipIf(!live)('live: a real pool named by REPLIKIT_XEN_URL', () => {
  let dir: string;
  let xen: XenDriver;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'rk-xen-live-'));
    const { driver: _kind, ...options } = side();
    xen = await createXenDriver(xenDriverOptionsSchema.parse(options), { targetPreview: true });
  });
  afterAll(async () => {
    await xen?.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function expectEqual(record: RunRecord, target: Hypervisor): Promise<void> {
    expect(record.outcome, JSON.stringify(record.error)).toBe('completed');
    for (const [i, disk] of record.snapshot!.disks.entries()) {
      const source = await readWholeDisk(xen, disk);
      expect(compareBytes(await readWholeDisk(target, record.replica!.disks[i]!), source)).toBe('equal');
    }
  }

  it('lists the VMs, including the test VM', async () => {
    const vms = await xen.listVMs();
    expect(vms.some((vm) => vm.id === env.REPLIKIT_XEN_VM || vm.name === env.REPLIKIT_XEN_VM)).toBe(true);
  });

  it('qhybrid xen ► file: the replica equals the snapshot', async () => {
    const engine = new ReplicationEngine({
      stateStore: new FileStateStore(join(dir, 'state-q')),
      drivers: new DriverRegistry().register(xenDriver).register(fileDriver),
      transport: localTransport(),
    });
    const target = createFileDriver({ root: join(dir, 'replicas') });
    try {
      const job = {
        name: 'live-qhybrid',
        source: { ...side(), vm: env.REPLIKIT_XEN_VM! },
        target: { driver: 'file', root: join(dir, 'replicas') },
        method: 'qhybrid',
      };
      await expectEqual(await engine.run(job), target);
    } finally {
      await target.close();
      await engine.close();
    }
  });

  it('xva xen ► xen: the replica equals the snapshot; the replica is deleted afterwards', async () => {
    const engine = new ReplicationEngine({
      stateStore: new FileStateStore(join(dir, 'state-x')),
      drivers: new DriverRegistry().register(xenDriver),
      transport: localTransport(),
    });
    let record: RunRecord | undefined;
    try {
      const job = {
        name: 'live-xva',
        source: { ...side(), vm: env.REPLIKIT_XEN_VM! },
        target: {
          ...side(),
          replicaName: `${env.REPLIKIT_XEN_VM}-replikit-live`,
          ...(env.REPLIKIT_XEN_SR ? { sr: env.REPLIKIT_XEN_SR } : {}),
          abd: { ips: ['192.0.2.1'] },
        },
        method: 'xva',
      };
      record = await engine.run(job);
      await expectEqual(record, xen);
    } finally {
      if (record?.replica) await xen.deleteReplica(record.replica).catch(() => undefined);
      if (record?.snapshot) await xen.deleteSnapshot(record.snapshot).catch(() => undefined);
      await engine.close();
    }
  });
});
