import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { localTransport } from '@replikit/transport';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  DriverRegistry,
  FailoverEngine,
  FileFailoverStore,
  FileStateStore,
  parseJob,
  ReplicationEngine,
} from '../src/index.js';
import { instanceDriver } from './helpers/instance-driver.js';
import { createMemoryDriver } from './helpers/memory-driver.js';

const MiB = 1024 * 1024;
let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'replikit-failover-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('FailoverEngine with a driver that cannot fail over', () => {
  it('refuses every operation with E_UNSUPPORTED before changing anything, and records the refusal', async () => {
    const source = createMemoryDriver({});
    const target = createMemoryDriver();
    source.addVm('vm1', [{ id: 'a', size: MiB }]);
    const drivers = new DriverRegistry()
      .register(instanceDriver('memsrc', () => source))
      .register(instanceDriver('memdst', () => target));
    const stateStore = new FileStateStore(join(dir, 'state'));
    const replication = new ReplicationEngine({ stateStore, drivers, transport: localTransport() });
    const job = parseJob(
      { name: 'unit', source: { driver: 'memsrc', vm: 'vm1' }, target: { driver: 'memdst' }, method: 'qhybrid' },
      'job',
    );
    await replication.run(job);
    const failover = new FailoverEngine({
      stateStore,
      failoverStore: new FileFailoverStore(join(dir, 'state')),
      drivers,
      replication,
    });
    await expect(failover.test(job)).rejects.toMatchObject({ code: 'E_UNSUPPORTED' });
    await expect(failover.unplanned(job, { force: true })).rejects.toMatchObject({
      code: 'E_UNSUPPORTED',
      details: { capability: 'failover' },
    });
    await expect(failover.planned(job)).rejects.toMatchObject({ code: 'E_UNSUPPORTED' });
    const record = await failover.status(job);
    expect(record.state).toBe('ready');
    expect(record.operation).toBeUndefined();
    expect(record.history.map((h) => `${h.kind}:${h.outcome}:${h.error?.code}`)).toEqual([
      'test:refused:E_UNSUPPORTED',
      'unplanned:refused:E_UNSUPPORTED',
      'planned:refused:E_UNSUPPORTED',
    ]);
    // The replica was not touched: the next run still runs.
    expect((await replication.run(job)).state).toBe('completed');
    await replication.close();
  });
});
