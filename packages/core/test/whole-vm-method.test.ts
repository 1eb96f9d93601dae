import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { localTransport } from '@replikit/transport';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  DriverRegistry,
  defineDriver,
  FileStateStore,
  type Hypervisor,
  type JobSpecInput,
  ReplicationEngine,
} from '../src/index.js';
import { defaultRuleSets } from '../src/rules/rule-validator.js';
import { createMemoryDriver, type MemoryDriver } from './helpers/memory-driver.js';
import { attachWholeVmHooks } from './helpers/whole-vm-hooks.js';

const MiB = 1024 * 1024;
let dir: string;
let source: MemoryDriver;
let target: MemoryDriver;

/** `hv` registered under `kind`, declaring method `xva` besides its own. */
function withXva(kind: string, hv: Hypervisor) {
  return defineDriver({
    kind,
    capabilities: { ...hv.capabilities, methods: [...hv.capabilities.methods, 'xva'] },
    create: () => hv,
  });
}

function engine() {
  return new ReplicationEngine({
    stateStore: new FileStateStore(join(dir, 'state')),
    drivers: new DriverRegistry().register(withXva('memsrc', source)).register(withXva('memdst', target)),
    transport: localTransport(),
    // xva-abd-xen-only ties xva to XenServer; here two memory drivers stand for a pair that can move whole VMs.
    ruleSets: defaultRuleSets().map((set) => ({
      ...set,
      rules: set.rules.filter((rule) => rule.id !== 'xva-abd-xen-only'),
    })),
  });
}

const job: JobSpecInput = {
  name: 'whole',
  source: { driver: 'memsrc', vm: 'vm1' },
  target: { driver: 'memdst' },
  method: 'xva',
  blockSize: 65536,
};

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'replikit-whole-vm-'));
  source = createMemoryDriver();
  target = createMemoryDriver();
  source.addVm('vm1', [
    { id: 'a', size: 2 * MiB },
    { id: 'b', size: MiB },
  ]);
  source.vms.get('vm1')!.disks.get('a')!.fill(3, 100, 70_000);
  source.vms
    .get('vm1')!
    .disks.get('b')!
    .fill(9, MiB - 10);
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('a whole-VM method (xva) in the engine', () => {
  it('fails in transfer with E_DRIVER when the drivers cannot move whole VMs', async () => {
    await expect(engine().run(job)).rejects.toMatchObject({
      code: 'E_DRIVER',
      message: expect.stringMatching(/moves whole VMs/),
    });
  });

  it('stops in validate with the facts a driver gives (xva-needs-staging), before any snapshot or replica', async () => {
    Object.assign(source, { ruleFacts: async () => ({ vmSizeBytes: 3 * MiB }) });
    Object.assign(target, { ruleFacts: async () => ({ stagingFreeBytes: MiB }) });
    await expect(engine().run(job)).rejects.toMatchObject({
      code: 'E_RULE',
      message: expect.stringMatching(/xva-needs-staging/),
    });
    expect(source.snapshots.size).toBe(0);
    expect(target.vms.size).toBe(0);
  });

  it('moves the VM through exportVm/importVm and commits it as a restore point; the replica equals the source', async () => {
    const imports = attachWholeVmHooks(source, target);
    const e = engine();
    const record = await e.run(job);
    expect(record.state).toBe('completed');
    expect(record.disks.map((d) => [d.mode, d.reason?.code, d.done])).toEqual([
      ['full', 'METHOD_ALWAYS_FULL', true],
      ['full', 'METHOD_ALWAYS_FULL', true],
    ]);
    expect(imports).toEqual([record.runId]);
    expect(record.stats.bytesRead).toBe(3 * MiB);
    const replica = target.vms.get(record.replica!.id)!;
    for (const id of ['a', 'b']) {
      expect(Buffer.compare(replica.disks.get(id)!, source.vms.get('vm1')!.disks.get(id)!)).toBe(0);
    }
    expect(await target.listRestorePoints(record.replica!)).toHaveLength(1);
    await e.close();
  });
});
