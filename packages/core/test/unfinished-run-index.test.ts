import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { localTransport } from '@replikit/transport';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DriverRegistry, FileStateStore, isReplikitError, ReplicationEngine, type RunRecord } from '../src/index.js';
import { instanceDriver } from './helpers/instance-driver.js';
import { createMemoryDriver } from './helpers/memory-driver.js';

let dir: string;
let registry: DriverRegistry;
const job = {
  name: 'unit',
  source: { driver: 'memsrc', vm: 'vm1' },
  target: { driver: 'memdst' },
  method: 'qhybrid',
  blockSize: 65536,
} as const;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'replikit-unfinished-'));
  const source = createMemoryDriver({ changeTracking: true });
  const target = createMemoryDriver();
  source.addVm('vm1', [{ id: 'a', size: 1024 * 1024 }]);
  registry = new DriverRegistry()
    .register(instanceDriver('memsrc', () => source))
    .register(instanceDriver('memdst', () => target));
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const state = () => join(dir, 'state');
const engine = () =>
  new ReplicationEngine({ transport: localTransport(), stateStore: new FileStateStore(state()), drivers: registry });

/** A run record as a crashed process leaves it: stopped in `transfer`, journaled by a dead pid. */
async function strandedRun(runId: string, from: RunRecord): Promise<void> {
  const record = { ...from, runId, state: 'transfer', pid: 2 ** 22 + 1, outcome: undefined };
  await writeFile(join(state(), 'runs', `${runId}.json`), JSON.stringify(record));
}

describe('finding an unfinished run without reading every run record', () => {
  it('a damaged record of a finished run no longer stops the next run of the job', async () => {
    const first = await engine().run(job);
    expect(first.state).toBe('completed');
    // A finished run's record is damaged (a disk error, a hand edit): only `runs` needs to read it.
    await writeFile(join(state(), 'runs', `${first.runId}.json`), '{ not json');
    const second = await engine().run(job);
    expect(second.state).toBe('completed');
  });

  it('an unfinished run journaled before the index existed is still found, and refused', async () => {
    const first = await engine().run(job);
    // The store as a version without the index left it: records only, one of them unfinished.
    await rm(join(state(), 'unfinished'), { recursive: true, force: true });
    await strandedRun('unit-stranded', first);
    const refused = await engine()
      .run(job)
      .catch((error: unknown) => error);
    expect(isReplikitError(refused, 'E_CONFLICT')).toBe(true);
    expect((refused as Error).message).toContain('unit-stranded');
    // Once indexed, the marker is there, and a finished run leaves none.
    expect((await readdir(join(state(), 'unfinished'))).filter((n) => !n.startsWith('.'))).toEqual(['unit-stranded']);
    const ended = await engine().resume('unit-stranded', { abandon: true });
    expect(ended.state).toBe('cancelled');
    expect((await readdir(join(state(), 'unfinished'))).filter((n) => !n.startsWith('.'))).toEqual([]);
    expect((await engine().run(job)).state).toBe('completed');
  });

  it('a marker left by a crash after the final record names a finished run: ignored and removed', async () => {
    const first = await engine().run(job);
    await writeFile(join(state(), 'unfinished', first.runId), '');
    expect((await engine().run(job)).state).toBe('completed');
    expect(await readdir(join(state(), 'unfinished'))).not.toContain(first.runId);
    expect(JSON.parse(await readFile(join(state(), 'runs', `${first.runId}.json`), 'utf8')).state).toBe('completed');
  });
});
