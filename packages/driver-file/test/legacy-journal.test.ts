import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FileStateStore, ReplicationEngine, type RunJournal, registerDriver, type StateStore } from '@replikit/core';
import { compareBytes, readWholeDisk, testPattern } from '@replikit/core/testing';
import { localTransport } from '@replikit/transport';
import { afterAll, describe, expect, it } from 'vitest';
import { createFileDriver, createFileVM, fileDriver, openGuestDisk } from '../src/index.js';
import { makeTempRoot, removeTempRoots } from './helpers/temp-root.js';

const MiB = 1024 * 1024;

/**
 * The journal of `runId` rewritten as the previous version wrote it: one flat record, version 1,
 * each stage's field at the top (no `stages`). Spelled out field by field, not derived with the
 * engine's own converter, so that a mistake in it cannot hide here.
 */
async function writeAsVersion1(stateDir: string, runId: string): Promise<Record<string, unknown>> {
  const path = join(stateDir, 'runs', `${runId}.json`);
  const journal = JSON.parse(await readFile(path, 'utf8')) as RunJournal;
  const { stages, version: _version, ...header } = journal;
  const flat = {
    ...header,
    version: 1,
    snapshot: stages.snapshot!.snapshot,
    ...(stages.prepare!.start!.baseSnapshot ? { baseSnapshot: stages.prepare!.start!.baseSnapshot } : {}),
    replica: stages.prepare!.replica,
    replicaCreated: stages.prepare!.replica.created,
    restorePointBefore: stages.prepare!.start!.restorePointBefore,
    replicaTouched: true,
  };
  await writeFile(path, `${JSON.stringify(flat, null, 2)}\n`);
  return flat;
}

/**
 * A file VM replicated once, then written by its guest, and a second run stopped in `transfer`
 * after a few checkpoints (its state disk failed, so it could not even clean up), its journal
 * rewritten as the previous version wrote it.
 */
async function stoppedRunOfOldVersion() {
  const dir = await makeTempRoot();
  const vms = join(dir, 'vms');
  registerDriver(fileDriver, { replace: true });
  await createFileVM(vms, { name: 'web', disks: [{ id: 'system', size: 8 * MiB }] });
  const job = {
    name: 'web',
    source: { driver: 'file', root: vms, vm: 'web', reflink: false },
    target: { driver: 'file', root: join(dir, 'replicas'), reflink: false },
    method: 'qhybrid',
  };
  const stateDir = join(dir, 'state');
  const inner = new FileStateStore(stateDir);
  let transferSaves = -1;
  const failing: StateStore = {
    location: inner.location,
    saveRun: (record) => {
      if (transferSaves >= 0 && ++transferSaves > 2) return Promise.reject(new Error('the state disk is gone'));
      return inner.saveRun(record);
    },
    loadRun: (id) => inner.loadRun(id),
    listRuns: () => inner.listRuns(),
    saveJob: (record) => inner.saveJob(record),
    loadJob: (name) => inner.loadJob(name),
    lockJob: (name, id) => inner.lockJob(name, id),
  };
  const first = new ReplicationEngine({ stateStore: failing, checkpointEveryMs: 0, transport: localTransport() });
  const seeded = await first.run(job);
  const target = createFileDriver({ root: join(dir, 'replicas') });
  const firstVersion = await readWholeDisk(target, seeded.replica!.disks[0]!);
  const guest = await openGuestDisk(vms, 'web', 'system');
  for (let at = 0; at < 8 * MiB; at += MiB) await guest.write(at + 4096, testPattern(at + 3, 200_000));
  await guest.close();
  first.on('state', (event) => {
    if (event.to === 'transfer') transferSaves = 0;
  });
  await expect(first.run(job)).rejects.toThrow('the state disk is gone');
  await first.close();
  const [stopped] = (await inner.listRuns()).filter((r) => r.state === 'transfer');
  expect(stopped!.disks[0]!.checkpointBlock).toBeGreaterThan(0);
  const flat = await writeAsVersion1(stateDir, stopped!.runId);
  return { dir, vms, job, stateDir, runId: stopped!.runId, flat, target, firstVersion, seeded };
}

describe('a run journaled by the previous version (one flat record)', () => {
  afterAll(removeTempRoots);

  it('is listed in its old shape, resumes from its checkpoint and completes; the replica equals the source', async () => {
    const { vms, stateDir, runId, flat, target } = await stoppedRunOfOldVersion();
    const engine = new ReplicationEngine({ stateStore: new FileStateStore(stateDir), transport: localTransport() });
    const [, listed] = await engine.listRuns();
    expect(listed).toMatchObject({ runId, state: 'transfer', replica: flat.replica, snapshot: flat.snapshot });

    const resumed = await engine.resume(runId);
    expect(resumed.state).toBe('completed');
    expect(resumed.restorePoint?.label).toBe(runId);
    // The checkpoints were kept: the run went on from them, nothing had to start again.
    expect(resumed.warnings.map((w) => w.code)).not.toContain('W_TRANSFER_RESTARTED');
    const source = createFileDriver({ root: vms });
    expect(
      compareBytes(
        await readWholeDisk(target, resumed.replica!.disks[0]!),
        await readWholeDisk(source, resumed.snapshot!.disks[0]!),
      ),
    ).toBe('equal');
    expect(await target.replicaOwner(resumed.replica!)).toBeUndefined();
    // Its journal is now one of this version, with each stage's part.
    const journal = JSON.parse(await readFile(join(stateDir, 'runs', `${runId}.json`), 'utf8')) as RunJournal;
    expect(journal.version).toBe(2);
    expect(journal.stages.commit?.restorePoint.label).toBe(runId);
    await engine.close();
  }, 120_000);

  it('rolls back to the restore point it started from, and its snapshot and hold are gone', async () => {
    const { vms, stateDir, runId, target, firstVersion, seeded } = await stoppedRunOfOldVersion();
    const engine = new ReplicationEngine({ stateStore: new FileStateStore(stateDir), transport: localTransport() });
    const rolled = await engine.resume(runId, { rollback: true });
    expect(rolled).toMatchObject({ state: 'cancelled', rolledBack: true });
    const replica = seeded.replica!;
    expect(compareBytes(await readWholeDisk(target, replica.disks[0]!), firstVersion)).toBe('equal');
    expect((await target.listRestorePoints(replica)).map((p) => p.label)).toEqual([seeded.runId]);
    expect(await target.replicaOwner(replica)).toBeUndefined();
    expect(await target.replicaMark(replica)).toBe('ready');
    const source = createFileDriver({ root: vms });
    const vm = await source.getVM('web');
    expect((await source.listSnapshots(vm.id)).map((s) => s.label)).not.toContain(`replikit-${runId}`);
    await engine.close();
  }, 120_000);
});
