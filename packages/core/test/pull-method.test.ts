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
  type RunRecord,
} from '../src/index.js';
import { defaultRuleSets } from '../src/rules/rule-validator.js';
import { createMemoryDriver, type MemoryDriver } from './helpers/memory-driver.js';
import { attachPullHooks } from './helpers/pull-hooks.js';

/*
 * Issue 17, ABD pull in engine runs: a job with `options.direction: 'pull'` makes the target bring
 * each disk itself (Hypervisor.pullDiskFrom) from what the source offers (Hypervisor.pullSource).
 */

const MiB = 1024 * 1024;
const BLOCK = 65536;
let dir: string;
let source: MemoryDriver;
let target: MemoryDriver;

/** `hv` registered under `kind`, declaring method `abd` besides its own. */
function withAbd(kind: string, hv: Hypervisor) {
  return defineDriver({
    kind,
    capabilities: { ...hv.capabilities, methods: [...hv.capabilities.methods, 'abd'] },
    create: () => hv,
  });
}

function engine() {
  return new ReplicationEngine({
    stateStore: new FileStateStore(join(dir, 'state')),
    drivers: new DriverRegistry().register(withAbd('memsrc', source)).register(withAbd('memdst', target)),
    transport: localTransport(),
    // xva-abd-xen-only ties abd to XenServer; here two memory drivers stand for a pair that can pull.
    ruleSets: defaultRuleSets().map((set) => ({
      ...set,
      rules: set.rules.filter((rule) => rule.id !== 'xva-abd-xen-only'),
    })),
  });
}

const job = (options: Record<string, unknown> = {}): JobSpecInput => ({
  name: 'pull',
  source: { driver: 'memsrc', vm: 'vm1' },
  target: { driver: 'memdst' },
  method: 'abd',
  blockSize: BLOCK,
  options: { direction: 'pull', ...options },
});

function replicaEqualsSource(): boolean {
  const src = source.vms.get('vm1')!;
  const dst = target.vms.get('vm1-replica')!;
  return [...src.disks].every(([id, data]) => Buffer.compare(data, dst.disks.get(id)!) === 0);
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'replikit-pull-'));
  source = createMemoryDriver({ changeTracking: true });
  target = createMemoryDriver();
  source.addVm('vm1', [
    { id: 'a', size: 2 * MiB },
    { id: 'b', size: MiB },
  ]);
  source.vms.get('vm1')!.disks.get('a')!.fill(3, 100, 300_000);
  source.vms
    .get('vm1')!
    .disks.get('b')!
    .fill(9, MiB - 10);
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('a pull job in the engine', () => {
  it('stops in validate with pull-needs-driver-support when the target cannot pull, before any snapshot or replica', async () => {
    Object.assign(source, { pullSource: async () => ({}) });
    await expect(engine().run(job())).rejects.toMatchObject({
      code: 'E_RULE',
      message: expect.stringMatching(/pull-needs-driver-support: .*target driver 'memdst' cannot pull a disk/),
    });
    expect(source.snapshots.size).toBe(0);
    expect(target.vms.size).toBe(0);
  });

  it('the target pulls each disk: full then incremental, replica equal, only differing blocks copied, plan hash-diff', async () => {
    const log = attachPullHooks(source, target);
    const e = engine();
    const warnings: string[] = [];
    e.on('warning', (w) => warnings.push(w.message));
    const progress: Array<{ blocksChanged: number; bytesRead: number }> = [];
    e.on('progress', (p) => progress.push({ blocksChanged: p.stats.blocksChanged, bytesRead: p.stats.bytesRead }));
    const first: RunRecord = await e.run(job({ replicationCache: true }));
    expect(first.state).toBe('completed');
    expect(replicaEqualsSource()).toBe(true);
    expect(log.pulls.sort((a, b) => a.disk - b.disk)).toEqual([
      { runId: first.runId, disk: 0, blocks: 32, copied: 5 },
      { runId: first.runId, disk: 1, blocks: 16, copied: 1 },
    ]);
    expect(first.stats).toMatchObject({ blocksScanned: 48, blocksChanged: 6, bytesRead: 6 * BLOCK });
    expect(warnings.filter((w) => w.startsWith('cache-ignored-for-pull: '))).toHaveLength(1);
    // The last progress event of the run carries the pulls' counts.
    expect(progress.at(-1)).toEqual({ blocksChanged: 6, bytesRead: 6 * BLOCK });

    source.vms
      .get('vm1')!
      .disks.get('a')!
      .fill(7, MiB + 5, MiB + 10);
    log.pulls.splice(0);
    const second = await e.run(job({ replicationCache: true }));
    expect(second.disks.map((d) => [d.mode, d.digestSource, d.reason?.code])).toEqual([
      ['hash-diff', 'replica', 'PULL_IGNORES_CACHE'],
      ['hash-diff', 'replica', 'PULL_IGNORES_CACHE'],
    ]);
    expect(log.pulls.sort((a, b) => a.disk - b.disk).map((p) => p.copied)).toEqual([1, 0]);
    expect(second.stats).toMatchObject({ blocksChanged: 1, bytesRead: BLOCK });
    expect(replicaEqualsSource()).toBe(true);
    expect(await target.listRestorePoints(second.replica!)).toHaveLength(2);
    expect(log.open.size).toBe(0);
    await e.close();
  });

  it('pulls options.parallelDisks disks at once, sharing options.bandwidthLimit among them', async () => {
    source.addVm('vm3', [
      { id: 'c', size: MiB },
      { id: 'd', size: MiB },
      { id: 'e', size: MiB },
    ]);
    const run = async (options: Record<string, unknown>) => {
      const log = attachPullHooks(source, target);
      const e = engine();
      const record = await e.run({
        ...job(options),
        name: `pull-${options.parallelDisks}`,
        source: { driver: 'memsrc', vm: 'vm3' },
      });
      await e.close();
      expect(record.state).toBe('completed');
      return log;
    };
    const two = await run({ parallelDisks: 2, bandwidthLimit: '10MB/s' });
    expect(two.maxInFlight).toBe(2);
    // Two at a time, each paced at half the cap: together never over it.
    expect(two.limits).toEqual([5_000_000, 5_000_000, 5_000_000]);
    const one = await run({ parallelDisks: 1 });
    expect(one.maxInFlight).toBe(1);
    expect(one.limits).toEqual([undefined, undefined, undefined]);
  });

  it('a run cancelled while one disk pulls does not count the disks not started as done', async () => {
    source.addVm('vm4', [
      { id: 'f', size: MiB },
      { id: 'g', size: MiB },
    ]);
    source.vms.get('vm4')!.disks.get('g')!.fill(4, 0, 1000);
    const log = attachPullHooks(source, target);
    const controller = new AbortController();
    const pull = target.pullDiskFrom!.bind(target);
    Object.assign(target, {
      pullDiskFrom: async (...args: Parameters<typeof pull>) => {
        const result = await pull(...args);
        controller.abort(new Error('cancelled by the test')); // after the first disk's pull returned
        return result;
      },
    });
    const e = engine();
    const outcome = await e
      .run(
        { ...job({ parallelDisks: 1 }), name: 'pull-cancel', source: { driver: 'memsrc', vm: 'vm4' } },
        {
          signal: controller.signal,
        },
      )
      .then((r) => r.state)
      .catch((error: { code?: string }) => error.code);
    await e.close();
    expect(outcome).not.toBe('completed');
    expect(log.pulls).toHaveLength(1);
  });

  it('a pull that fails mid-disk fails the run, rolls the replica back and closes the offer', async () => {
    const log = attachPullHooks(source, target);
    const e = engine();
    const first = await e.run(job());
    const before = Buffer.from(target.vms.get('vm1-replica')!.disks.get('a')!);
    source.vms
      .get('vm1')!
      .disks.get('a')!
      .fill(5, 0, 4 * BLOCK);
    log.failAfter = 2;
    await expect(e.run(job())).rejects.toThrow(/source agent gone/);
    expect(Buffer.compare(target.vms.get('vm1-replica')!.disks.get('a')!, before)).toBe(0);
    expect(await target.replicaMark(first.replica!)).toBe('ready');
    expect(await target.replicaOwner(first.replica!)).toBeUndefined();
    expect(log.open.size).toBe(0);
    await e.close();
  });
});
