// `replikit daemon` as a child process: SIGKILL in the middle of a run, then a restart resumes
// that run and the replica verifies; SIGTERM stops it cleanly (a run it catches is stopped at a checkpoint); `replikit status --json` and the
// Prometheus endpoint report the job. The test waits for the daemon's lines, never for time.

import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileStateStore, isTerminal } from '@replikit/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { runCli, spawnCli, waitForExit } from './helpers/cli-harness.js';
import { replicaEquals } from './helpers/daemon-rig.js';
import { createRandomVm } from './helpers/file-vm.js';

const MiB = 1024 * 1024;
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'replikit-daemon-cli-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Resolves with the first match of `pattern` in the child's stderr (from its start). */
function whenStderr(child: ReturnType<typeof spawnCli>, pattern: RegExp): Promise<RegExpMatchArray> {
  let seen = '';
  return new Promise((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      seen += chunk.toString();
      const match = seen.match(pattern);
      if (match) {
        child.stderr!.off('data', onData);
        resolve(match);
      }
    };
    child.stderr!.on('data', onData);
    child.once('close', () => reject(new Error(`the daemon exited before printing ${pattern}:\n${seen}`)));
  });
}

function get(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    request(url, (response) => {
      let body = '';
      response.on('data', (chunk: Buffer) => {
        body += chunk.toString();
      });
      response.on('end', () => resolve(body));
    })
      .on('error', reject)
      .end();
  });
}

describe('replikit daemon', () => {
  it('SIGKILL mid-run, restart: the run is resumed and the replica verifies; SIGTERM stops it', async () => {
    await createRandomVm(join(dir, 'vms'), 'guest', [{ id: 'disk0', size: 4 * MiB }], 0.9);
    await writeFile(
      join(dir, 'jobs.yaml'),
      stringify({
        name: 'nightly',
        source: { driver: 'file', root: './vms', vm: 'guest' },
        target: { driver: 'file', root: './replicas' },
        method: 'qhybrid',
        // Slow enough that the kill lands inside the transfer.
        options: { schedule: '* * * * * *', rpo: '1h', bandwidthLimit: '4MB/s' },
      }),
    );
    const first = spawnCli(['daemon', 'jobs.yaml'], { cwd: dir });
    const firstExit = waitForExit(first);
    await whenStderr(first, /\] transfer\n/);
    first.kill('SIGKILL');
    expect((await firstExit).signal).toBe('SIGKILL');

    const store = new FileStateStore(join(dir, '.replikit'));
    const unfinished = (await store.listRuns()).filter((run) => !isTerminal(run.state));
    // Entering `transfer` is journaled with its first checkpoint: the journal may still say `plan`.
    expect(unfinished).toHaveLength(1);
    expect(['plan', 'transfer']).toContain(unfinished[0]!.state);
    const runId = unfinished[0]!.runId;
    // The killed daemon's job is not shown as running.
    const down = await runCli(['status', '--json'], { cwd: dir });
    expect(JSON.parse(down.stdout)[0]).toMatchObject({ job: 'nightly', state: 'down' });

    const second = spawnCli(['daemon', '.', '--metrics-port', '0'], { cwd: dir });
    const secondExit = waitForExit(second);
    const port = (await whenStderr(second, /metrics at http:\/\/127\.0\.0\.1:(\d+)\/metrics/))[1];
    await whenStderr(second, new RegExp(`nightly: run starts \\(resume ${runId}\\)`));
    await whenStderr(second, new RegExp(`nightly: run ${runId} completed`));
    const metrics = await get(`http://127.0.0.1:${port}/metrics`);
    second.kill('SIGTERM');
    const stopped = await secondExit;
    expect(stopped.code, stopped.stderr).toBe(0);
    expect(stopped.stderr).toMatch(/daemon stopped/);

    expect((await store.loadRun(runId))?.state).toBe('completed');
    // A run of the next slot that SIGTERM caught is left stopped at a checkpoint, to be resumed.
    const left = (await store.listRuns()).filter((run) => !isTerminal(run.state));
    expect(left.map((run) => run.stopped?.reason)).toEqual(left.map(() => 'stopped'));
    expect(await replicaEquals(join(dir, 'vms'), 'guest', join(dir, 'replicas'), 'guest-replica')).toBe(true);
    expect(metrics).toMatch(/^replikit_job_runs_total\{job="nightly",outcome="completed"\} [1-9]/m);
    expect(metrics).toMatch(/^replikit_job_rpo_level\{job="nightly"\} 0$/m);

    const status = await runCli(['status', '--json'], { cwd: dir });
    expect(status.code).toBe(0);
    const [job] = JSON.parse(status.stdout) as Array<Record<string, unknown>>;
    expect(job).toMatchObject({ job: 'nightly', state: 'stopped', rpoLevel: 'ok', rpoTargetSeconds: 3600 });
  });
});
