// SIGTERM of `replikit daemon` and of `replikit run` stops the run at a checkpoint: the process
// exits at once, the run stays unfinished (journaled `stopped`), and the next daemon (or
// `replikit resume`) goes on from the journal without sending again what was sent. Then
// `replikit daemon pause|resume` on a running daemon. The test waits for the processes' lines.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileStateStore, isTerminal, type RunJournal } from '@replikit/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { runCli, spawnCli, waitForExit } from './helpers/cli-harness.js';
import { replicaEquals } from './helpers/daemon-rig.js';
import { createRandomVm } from './helpers/file-vm.js';

const MiB = 1024 * 1024;
let dir: string;
let store: FileStateStore;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'replikit-daemon-sigterm-'));
  store = new FileStateStore(join(dir, '.replikit'));
  await createRandomVm(join(dir, 'vms'), 'guest', [{ id: 'disk0', size: 16 * MiB }], 0.9);
  const job = (name: string, replicas: string, options: Record<string, unknown>) => ({
    name,
    source: { driver: 'file', root: './vms', vm: 'guest' },
    target: { driver: 'file', root: replicas },
    method: 'qhybrid',
    options,
  });
  // Slow enough (about 4 s) that the signal lands inside the transfer.
  await writeFile(
    join(dir, 'nightly.yaml'),
    stringify(job('nightly', './replicas', { schedule: '* * * * * *', bandwidthLimit: '4MB/s' })),
  );
  await writeFile(join(dir, 'oneshot.yaml'), stringify(job('oneshot', './replicas-b', { bandwidthLimit: '4MB/s' })));
  await writeFile(join(dir, 'reference.yaml'), stringify(job('reference', './replicas-c', {})));
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
    child.once('close', () => reject(new Error(`the process exited before printing ${pattern}:\n${seen}`)));
  });
}

async function unfinishedRuns(): Promise<RunJournal[]> {
  return (await store.listRuns()).filter((run) => !isTerminal(run.state));
}

/** What an uninterrupted full run of the VM sends. */
async function referenceBytes(): Promise<number> {
  const result = await runCli(['run', 'reference.yaml'], { cwd: dir, env: { REPLIKIT_STATE_DIR: join(dir, '.ref') } });
  expect(result.code, result.stderr).toBe(0);
  const [run] = await new FileStateStore(join(dir, '.ref')).listRuns();
  return run!.stats.bytesSent;
}

describe('SIGTERM stops a run at a checkpoint', () => {
  it('daemon: exits promptly leaving the run stopped; the next daemon resumes it, sending nothing twice', async () => {
    const whole = await referenceBytes();
    const first = spawnCli(['daemon', 'nightly.yaml'], { cwd: dir });
    const firstExit = waitForExit(first);
    // The first progress line comes once the transfer has sent its first segment.
    await whenStderr(first, /\] transfer \d+%: /);
    const signalled = performance.now();
    first.kill('SIGTERM');
    const exited = await firstExit;
    const exitMs = performance.now() - signalled;
    expect(exited.code, exited.stderr).toBe(0);
    expect(exited.stderr).toMatch(/SIGTERM: stopping at a checkpoint/);
    expect(exited.stderr).toMatch(/nightly: run \S+ stopped in .*E_ABORTED/);

    const [parked, ...others] = await unfinishedRuns();
    expect(others).toEqual([]);
    expect(parked!.stopped?.reason).toBe('stopped');
    const sentBeforeStop = parked!.stats.bytesSent;
    expect(sentBeforeStop).toBeGreaterThan(0);
    const status = JSON.parse((await runCli(['status', '--json'], { cwd: dir })).stdout);
    expect(status[0]).toMatchObject({ job: 'nightly', state: 'stopped', lastRun: { outcome: 'stopped' } });

    const second = spawnCli(['daemon', 'nightly.yaml'], { cwd: dir });
    const secondExit = waitForExit(second);
    await whenStderr(second, new RegExp(`nightly: run starts \\(resume ${parked!.runId}\\)`));
    await whenStderr(second, new RegExp(`nightly: run ${parked!.runId} completed`));
    const done = (await store.loadRun(parked!.runId))!;
    // Stats add up across the stop: a block sent twice would be counted twice.
    expect(done.stats.bytesSent).toBe(whole);
    expect(await replicaEquals(join(dir, 'vms'), 'guest', join(dir, 'replicas'), 'guest-replica')).toBe(true);
    console.info(
      `daemon SIGTERM → exit: ${exitMs.toFixed(0)} ms; sent before the stop (not sent again): ${sentBeforeStop} of ${whole} bytes`,
    );

    // pause and resume through the state folder, applied by the running daemon.
    const paused = await runCli(['daemon', 'pause', 'nightly'], { cwd: dir });
    expect(paused.code, paused.stderr).toBe(0);
    await whenStderr(second, /nightly: paused \(asked at/);
    const afterPause = JSON.parse((await runCli(['status', '--json'], { cwd: dir })).stdout);
    expect(afterPause[0]).toMatchObject({ job: 'nightly', state: 'paused', paused: true });
    const table = await runCli(['status'], { cwd: dir });
    expect(table.stdout).toMatch(/nightly +paused .*paused \(replikit daemon resume nightly\)/);
    expect((await runCli(['daemon', 'resume', 'nightly'], { cwd: dir })).code).toBe(0);
    await whenStderr(second, /nightly: resumed \(asked at/);
    const afterResume = JSON.parse((await runCli(['status', '--json'], { cwd: dir })).stdout);
    expect(afterResume[0]).toMatchObject({ job: 'nightly', paused: false });
    expect(afterResume[0].state).not.toBe('paused');
    const unknown = await runCli(['daemon', 'pause', 'nosuchjob'], { cwd: dir });
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/E_NOT_FOUND: no job 'nosuchjob' is scheduled/);

    second.kill('SIGTERM');
    expect((await secondExit).code).toBe(0);
  });

  it('run: exits with the run stopped and unfinished; replikit resume finishes it', async () => {
    const child = spawnCli(['run', 'oneshot.yaml'], { cwd: dir });
    const exit = waitForExit(child);
    await whenStderr(child, /\] transfer \d+%: /);
    child.kill('SIGTERM');
    const result = await exit;
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/E_ABORTED: run (\S+) stopped at a checkpoint \(stopped\) and is unfinished/);
    const parked = (await unfinishedRuns()).find((run) => run.job.name === 'oneshot')!;
    expect(parked.stopped?.reason).toBe('stopped');
    expect(parked.outcome).toBeUndefined();
    expect(parked.stats.bytesSent).toBeGreaterThan(0);
    const resumed = await runCli(['resume', parked.runId], { cwd: dir });
    expect(resumed.code, resumed.stderr).toBe(0);
    expect((await store.loadRun(parked.runId))?.state).toBe('completed');
    expect(await replicaEquals(join(dir, 'vms'), 'guest', join(dir, 'replicas-b'), 'guest-replica')).toBe(true);
  });
});
