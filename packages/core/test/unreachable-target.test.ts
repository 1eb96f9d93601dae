import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { localTransport } from '@replikit/transport';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DriverRegistry, FileStateStore, ReplicationEngine, TransportError } from '../src/index.js';
import { instanceDriver } from './helpers/instance-driver.js';
import { createMemoryDriver, type MemoryDriver } from './helpers/memory-driver.js';

const MiB = 1024 * 1024;
let dir: string;
let source: MemoryDriver;
let target: MemoryDriver;
let registry: DriverRegistry;

const job = {
  name: 'unreachable',
  source: { driver: 'memsrc', vm: 'vm1' },
  target: { driver: 'memdst' },
  method: 'qhybrid',
};

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'replikit-unreachable-'));
  source = createMemoryDriver({ changeTracking: true });
  target = createMemoryDriver();
  registry = new DriverRegistry()
    .register(instanceDriver('memsrc', () => source))
    .register(instanceDriver('memdst', () => target));
  source.addVm('vm1', [{ id: 'a', size: 2 * MiB }]);
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('a target driver that cannot be reached', () => {
  it('ends the run as failed (not stuck in cleanup) and does not block the next run', async () => {
    let reachable = false;
    const engine = new ReplicationEngine({
      transport: localTransport(),
      stateStore: new FileStateStore(join(dir, 'state')),
      drivers: registry,
      // As the CLI's remote target does when the agent is down or the transport section is wrong.
      targetDriver: () => {
        if (!reachable) throw new TransportError('agent 127.0.0.1:9 refused the connection');
        return undefined; // the registry's driver
      },
    });
    await expect(engine.run(job)).rejects.toMatchObject({ code: 'E_TRANSPORT' });
    const [first] = await engine.listRuns();
    expect(first?.state).toBe('failed');
    expect(first?.error?.code).toBe('E_TRANSPORT');
    expect(source.snapshots.size).toBe(0);

    reachable = true;
    const second = await engine.run(job);
    expect(second.outcome).toBe('completed');
  });
});
