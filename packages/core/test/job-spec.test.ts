import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JobError } from '../src/errors.js';
import { replicaNameOf } from '../src/job/job-spec.js';
import { loadJobFile, parseJob } from '../src/job/parse-job.js';

const minimal = {
  name: 'web-nightly',
  source: { driver: 'xen', vm: 'web01' },
  target: { driver: 'file' },
  method: 'qhybrid',
};

/** The JobError that `run` throws (sync or async); fails the test when it throws nothing else. */
async function jobErrorOf(run: () => unknown): Promise<JobError> {
  try {
    await run();
  } catch (error) {
    expect(error).toBeInstanceOf(JobError);
    expect((error as JobError).code).toBe('E_JOB');
    return error as JobError;
  }
  throw new Error('expected a JobError, but nothing was thrown');
}

describe('parseJob', () => {
  it('applies every default', () => {
    const job = parseJob(minimal);
    expect(job.blockSize).toBe(65536);
    expect(job.options).toEqual({
      replicationCache: false,
      singlePass: false,
      direction: 'push',
      retention: 3,
      strongDigests: false,
      parallelDisks: 2,
    });
    expect(job.transport).toEqual({ kind: 'inprocess' });
    expect(replicaNameOf(job)).toBe('web01-replica');
  });

  it('names the field and the received type of a wrong value in one line', async () => {
    const error = await jobErrorOf(() => parseJob({ ...minimal, options: { retention: 'three' } }));
    expect(error.message).toBe('job: options.retention: expected number, got string "three"');
    expect(error.details.issues).toEqual([
      { path: 'options.retention', message: 'expected number, got string "three"' },
    ]);
  });

  it('lists every bad field, one per line', async () => {
    const error = await jobErrorOf(() =>
      parseJob(
        { ...minimal, blockSize: true, options: { direction: 'sideways', parallelDisks: 2.5 } },
        'jobs/web.yaml',
      ),
    );
    expect(error.message.split('\n')).toEqual([
      'jobs/web.yaml: blockSize: expected a block size in bytes or with a unit, such as 65536 or "64KiB", got boolean true',
      'jobs/web.yaml: options.direction: expected one of "push"|"pull", got string "sideways"',
      'jobs/web.yaml: options.parallelDisks: expected a whole number, got number 2.5',
    ]);
  });

  it('says which required field is missing', async () => {
    const error = await jobErrorOf(() => parseJob({ ...minimal, source: { vm: 'web01' } }));
    expect(error.message).toMatch(/^job: source\.driver: expected the driver kind as a string.*, got nothing$/);
  });

  it('rejects an unknown option key', async () => {
    const error = await jobErrorOf(() => parseJob({ ...minimal, options: { retension: 5 } }));
    expect(error.message).toBe("job: options: unknown field 'retension'");
  });

  it('reads a bandwidth limit with a unit', () => {
    expect(parseJob({ ...minimal, options: { bandwidthLimit: '20MB/s' } }).options.bandwidthLimit).toBe(20_000_000);
    expect(parseJob({ ...minimal, options: { bandwidthLimit: 1000 } }).options.bandwidthLimit).toBe(1000);
  });

  it('rejects a bandwidth limit that is not a rate', async () => {
    const error = await jobErrorOf(() => parseJob({ ...minimal, options: { bandwidthLimit: 'fast' } }));
    expect(error.message).toMatch(/^job: options\.bandwidthLimit: 'fast' is not a size; /);
  });

  it('reads a block size with a unit and rejects one that is not a power of two', async () => {
    expect(parseJob({ ...minimal, blockSize: '64KiB' }).blockSize).toBe(65536);
    const error = await jobErrorOf(() => parseJob({ ...minimal, blockSize: 3000 }));
    expect(error.message).toBe('job: blockSize: expected a power of two from 4 KiB to 16 MiB, got 3000');
  });

  it('explains a bad replica name', async () => {
    const error = await jobErrorOf(() => parseJob({ ...minimal, target: { driver: 'file', replicaName: 'web 01' } }));
    expect(error.message).toMatch(/^job: target\.replicaName: a replica name is 1-128 letters.*, got string "web 01"$/);
  });
});

describe('loadJobFile', () => {
  let folder: string;
  beforeAll(async () => {
    folder = await mkdtemp(join(tmpdir(), 'replikit-job-'));
  });
  afterAll(async () => {
    await rm(folder, { recursive: true, force: true });
  });

  async function file(name: string, text: string): Promise<string> {
    const path = join(folder, name);
    await writeFile(path, text);
    return path;
  }

  it('loads a YAML job', async () => {
    const path = await file(
      'web.yaml',
      'name: web-nightly\nmethod: qhybrid\nblockSize: 1MiB\nsource: { driver: xen, vm: web01 }\ntarget:\n  driver: hyperv\n',
    );
    const job = await loadJobFile(path);
    expect(job).toMatchObject({ name: 'web-nightly', blockSize: 1024 * 1024, target: { driver: 'hyperv' } });
  });

  it('loads a JSON job', async () => {
    const job = await loadJobFile(await file('web.json', JSON.stringify(minimal)));
    expect(job.source).toEqual({ driver: 'xen', vm: 'web01' });
  });

  it('names the file of a job with a bad field', async () => {
    const path = await file('bad.yml', 'name: web\nmethod: qhybrid\nsource: { driver: xen, vm: web01 }\n');
    const error = await jobErrorOf(() => loadJobFile(path));
    expect(error.message).toBe(`${path}: target: expected object, got nothing`);
  });

  it('reports a missing file in one line', async () => {
    const path = join(folder, 'nope.yaml');
    const error = await jobErrorOf(() => loadJobFile(path));
    expect(error.message).toBe(`cannot read job file ${path}: no such file`);
  });

  it('reports invalid YAML in one line', async () => {
    const path = await file('broken.yaml', 'name: web\nsource: { driver: xen\n');
    const error = await jobErrorOf(() => loadJobFile(path));
    expect(error.message).not.toContain('\n');
    expect(error.message.startsWith(`${path} is not valid YAML: `)).toBe(true);
    expect(error.message).toMatch(/ at line 3, column 1$/);
  });

  it('reports invalid JSON and an empty file in one line', async () => {
    const json = await jobErrorOf(async () => loadJobFile(await file('broken.json', '{"name": ')));
    expect(json.message).toMatch(/broken\.json is not valid JSON: /);
    expect(json.message).not.toContain('\n');
    const empty = await file('empty.yaml', '# nothing yet\n');
    const error = await jobErrorOf(() => loadJobFile(empty));
    expect(error.message).toBe(`${empty} is empty; a job needs at least name, source, target and method`);
  });
});
