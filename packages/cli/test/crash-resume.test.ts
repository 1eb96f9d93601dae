// Kills the engine's process with SIGKILL at random points of runs, many times, and checks the
// invariant the design serves: after each kill, a replica that can start is a complete version
// (the previous or the new one), a replica in progress refuses to start, and after `resume` (or a
// rollback) the replica equals the source snapshot (or its previous version).
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileStateStore, isReplikitError, isTerminal, type Replica } from '@replikit/core';
import { createFileDriver } from '@replikit/driver-file';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { killDuringTransfer, spawnCli, waitForExit } from './helpers/cli-harness.js';
import { createRandomVm, digestOf, guestChanges } from './helpers/file-vm.js';

const MiB = 1024 * 1024;
/**
 * Kills per run of this file: 22 (the acceptance asks for at least 20). `.ci/run` lowers it on
 * Node 22 and 24 with `REPLIKIT_CRASH_POINTS` (the kill points exercise the engine's journal, not
 * the Node version; Node 20 runs the full count).
 */
const KILLS = Number(process.env.REPLIKIT_CRASH_POINTS ?? 22);
const MAX_ROUNDS = Math.max(60, KILLS * 3);
const DISKS = [
  { id: 'system', size: 6 * MiB + 12288 },
  { id: 'data', size: 3 * MiB },
];
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'replikit-crash-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function sourceDigests(): Promise<string[]> {
  const source = createFileDriver({ root: join(dir, 'vms') });
  try {
    const vm = await source.getVM('guest');
    return await Promise.all(vm.disks.map((disk) => digestOf(source, disk)));
  } finally {
    await source.close();
  }
}

async function replicaView(): Promise<{ replica: Replica; mark: string; digests: string[] } | undefined> {
  const target = createFileDriver({ root: join(dir, 'replicas') });
  try {
    const vm = await target.getVM('guest-replica').catch((error: unknown) => {
      if (isReplikitError(error, 'E_NOT_FOUND')) return undefined;
      throw error;
    });
    if (!vm) return undefined;
    const replica: Replica = { id: vm.id, name: vm.name, disks: vm.disks, created: false };
    const mark = await target.replicaMark(replica);
    if (mark === 'in-progress') {
      // The invariant: a replica being written never starts.
      const started = await target.power(replica.id, 'start').then(
        () => 'started',
        (error: unknown) => (error as { code?: string }).code,
      );
      expect(started).toBe('E_REPLICA_IN_PROGRESS');
      return { replica, mark, digests: [] };
    }
    return { replica, mark, digests: await Promise.all(replica.disks.map((disk) => digestOf(target, disk))) };
  } finally {
    await target.close();
  }
}

describe('SIGKILL at random points of a run', () => {
  it(`leaves a replica that is always complete or refuses to start, and resume restores it (${KILLS} kills)`, async () => {
    await createRandomVm(join(dir, 'vms'), 'guest', DISKS, 0.7);
    await writeFile(
      join(dir, 'job.yaml'),
      stringify({
        name: 'crash',
        source: { driver: 'file', root: './vms', vm: 'guest' },
        target: { driver: 'file', root: './replicas' },
        method: 'qhybrid',
        // Slow enough that a random kill lands inside the transfer most of the time.
        options: { bandwidthLimit: '8MB/s', retention: 2 },
      }),
    );
    const store = new FileStateStore(join(dir, '.replikit'));
    let committed: string[] | undefined; // the replica's last complete version
    let kills = 0;
    let rollbacks = 0;
    let completedBeforeKill = 0;
    const killedIn = new Map<string, number>(); // by the state the run last announced

    for (let round = 0; round < MAX_ROUNDS && kills < KILLS; round++) {
      if (round > 0) for (const disk of DISKS) await guestChanges(join(dir, 'vms'), 'guest', disk, 0.6, 65536);
      const wanted = await sourceDigests();
      const { killed, lastState } = await killDuringTransfer(['run', 'job.yaml'], dir, Math.floor(Math.random() * 700));
      if (killed) {
        kills++;
        if (lastState) killedIn.set(lastState, (killedIn.get(lastState) ?? 0) + 1);
      }

      const view = await replicaView();
      if (view && view.mark === 'ready') {
        // A startable replica is one of the two complete versions, never a mix.
        expect([JSON.stringify(wanted), JSON.stringify(committed)]).toContain(JSON.stringify(view.digests));
      }
      const unfinished = (await store.listRuns()).filter((run) => !isTerminal(run.state));
      expect(unfinished.length).toBeLessThanOrEqual(1);
      const run = unfinished[0];
      if (!run) {
        completedBeforeKill++;
        expect((await replicaView())?.digests).toEqual(wanted);
        committed = wanted;
        continue;
      }
      // Every fourth round rolls back; with few kills (REPLIKIT_CRASH_POINTS) the last one does if none has.
      const rollback = round % 4 === 3 || (kills >= KILLS && rollbacks === 0);
      const resumed = await waitForExit(
        spawnCli(['resume', run.runId, ...(rollback ? ['--rollback'] : [])], { cwd: dir }),
      );
      expect(resumed.stderr).not.toMatch(/\n\s+at /);
      expect(resumed.code, resumed.stderr).toBe(0);
      const after = await replicaView();
      // A run killed in its cleanup had already committed: a rollback request finishes it instead.
      const alreadyCommitted = run.state === 'cleanup' && run.outcome === 'completed';
      if (rollback && !alreadyCommitted) {
        rollbacks++;
        // Rolled back: the previous complete version, or no replica at all before the first commit.
        if (committed) expect(after?.digests, `rolled back from ${run.state}/${run.outcome ?? '-'}`).toEqual(committed);
        else expect(after).toBeUndefined();
      } else {
        expect(after?.mark).toBe('ready');
        expect(after?.digests).toEqual(wanted);
        committed = wanted;
      }
    }
    expect(kills, `${completedBeforeKill} runs finished before their kill`).toBeGreaterThanOrEqual(Math.min(20, KILLS));
    expect(rollbacks).toBeGreaterThan(0);
    expect(killedIn.get('transfer')).toBeGreaterThan(0);
    console.info(
      `kills: ${kills}, by the state last announced: ${JSON.stringify(Object.fromEntries(killedIn))}, ` +
        `rollbacks: ${rollbacks}, runs that ended before their kill: ${completedBeforeKill}`,
    );
  }, 600_000);
});
