import { getEventListeners } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { localTransport } from '@replikit/transport';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DriverRegistry, FileStateStore, type JobSpecInput, ReplicationEngine } from '../src/index.js';
import { instanceDriver } from './helpers/instance-driver.js';
import { createMemoryDriver, type MemoryDriver } from './helpers/memory-driver.js';

const MiB = 1024 * 1024;
let dir: string;
let source: MemoryDriver;
let target: MemoryDriver;
let registry: DriverRegistry;

const job: JobSpecInput = {
  name: 'unit',
  source: { driver: 'memsrc', vm: 'vm1' },
  target: { driver: 'memdst' },
  method: 'qhybrid',
  blockSize: 65536,
};

function engine() {
  return new ReplicationEngine({
    stateStore: new FileStateStore(join(dir, 'state')),
    drivers: registry,
    transport: localTransport(),
    // Only the stop's own checkpoint: the periodic ones would hide a stop that journals nothing.
    checkpointEveryMs: 3_600_000,
  });
}

function fill(data: Uint8Array, seed: number) {
  let x = seed;
  for (let i = 0; i < data.length; i++) {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    data[i] = x >>> 16;
  }
}

/** Counts the bytes written to the replica. */
function countWrites(): { bytes: number } {
  const counter = { bytes: 0 };
  target.hooks.beforeWrite = (_disk, _offset, length) => {
    counter.bytes += length;
  };
  return counter;
}

/** The job's run that is not finished, as the store journals it. */
async function unfinished(store: FileStateStore) {
  const runs = await store.listRuns();
  return runs.find((run) => !['completed', 'failed', 'cancelled'].includes(run.state));
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'replikit-stop-'));
  source = createMemoryDriver({ changeTracking: true });
  target = createMemoryDriver();
  registry = new DriverRegistry()
    .register(instanceDriver('memsrc', () => source))
    .register(instanceDriver('memdst', () => target));
  source.addVm('vm1', [
    { id: 'a', size: 8 * MiB },
    { id: 'b', size: 2 * MiB },
  ]);
  fill(source.vms.get('vm1')!.disks.get('a')!, 1);
  fill(source.vms.get('vm1')!.disks.get('b')!, 2);
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('a run stopped at a checkpoint (RunOptions.suspend)', () => {
  it('is left unfinished and stopped; its resume sends only what was not sent, and the replica equals the source', async () => {
    // The bytes a run that is never stopped writes.
    const whole = countWrites();
    await engine().run(job);
    const wholeBytes = whole.bytes;
    await rm(dir, { recursive: true, force: true });
    target = createMemoryDriver();

    const e = engine();
    const written = countWrites();
    const stop = new AbortController();
    target.hooks.beforeWrite = (_disk, _offset, length) => {
      written.bytes += length;
      if (written.bytes >= 3 * MiB) stop.abort('stopped');
    };
    const error = await e.run(job, { suspend: stop.signal }).catch((err: unknown) => err);
    expect(error).toMatchObject({ code: 'E_ABORTED', details: { stopped: 'stopped' } });
    const store = new FileStateStore(join(dir, 'state'));
    const parked = await unfinished(store);
    expect(parked?.state).toBe('transfer');
    const journal = await store.loadRun(parked!.runId);
    expect(journal?.stopped?.reason).toBe('stopped');
    // Nothing was rolled back: the replica keeps what was sent, and has no restore point yet.
    const replica = target.vms.get('vm1-replica')!;
    expect(replica.replica?.points ?? []).toHaveLength(0);
    const sentBeforeStop = written.bytes;
    expect(sentBeforeStop).toBeGreaterThanOrEqual(3 * MiB);
    expect(sentBeforeStop).toBeLessThan(wholeBytes);

    written.bytes = 0;
    target.hooks.beforeWrite = (_disk, _offset, length) => {
      written.bytes += length;
    };
    const resumed = await e.resume(parked!.runId);
    expect(resumed.state).toBe('completed');
    expect(resumed.stopped).toBeUndefined();
    // Not one byte sent before the stop is sent again.
    expect(written.bytes).toBe(wholeBytes - sentBeforeStop);
    for (const id of ['a', 'b']) {
      expect(Buffer.compare(replica.disks.get(id)!, source.vms.get('vm1')!.disks.get(id)!), id).toBe(0);
    }
  });

  it('stops between stages before its transfer, and resumes from there', async () => {
    const e = engine();
    const stop = new AbortController();
    e.on('state', (s) => {
      if (s.to === 'snapshot') stop.abort('window');
    });
    await expect(e.run(job, { suspend: stop.signal })).rejects.toMatchObject({
      code: 'E_ABORTED',
      details: { stopped: 'window' },
    });
    const store = new FileStateStore(join(dir, 'state'));
    const parked = await unfinished(store);
    expect((await store.loadRun(parked!.runId))?.stopped?.reason).toBe('window');
    e.removeAllListeners('state');
    expect((await e.resume(parked!.runId)).state).toBe('completed');
  });

  it('is rolled back when its signal cancels it, even while it stops', async () => {
    const e = engine();
    const stop = new AbortController();
    const cancel = new AbortController();
    target.hooks.beforeWrite = () => {
      stop.abort();
      cancel.abort();
    };
    await expect(e.run(job, { suspend: stop.signal, signal: cancel.signal })).rejects.toMatchObject({
      code: 'E_ABORTED',
    });
    const runs = await e.listRuns();
    expect(runs.at(-1)?.state).toBe('cancelled');
    expect(runs.at(-1)?.stopped).toBeUndefined();
  });

  it('leaves no listener on a stop signal that outlives its runs (a daemon passes one to every run)', async () => {
    const e = engine();
    const stop = new AbortController();
    for (let i = 0; i < 3; i++) expect((await e.run(job, { suspend: stop.signal })).state).toBe('completed');
    expect(getEventListeners(stop.signal, 'abort')).toHaveLength(0);
  });
});
