import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { DiskRef, Replica, ReplicaSpec } from '@replikit/core';
import { compareBytes, readWholeDisk, testPattern } from '@replikit/core/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type HyperVDriver, PowerShellLink, type PsScript } from '../src/index.js';
import { type SimHost, startSimHost } from './helpers/sim-host.js';

const MiB = 2 ** 20;
const SIZE = 4 * MiB;

// What a Hyper-V administrator can do to a replica that makes the next checkpoint fail.
const CHECKPOINT_TYPE: PsScript = {
  name: 'test-checkpoint-type',
  body: 'Set-VM -Name $p.name -CheckpointType $p.type',
};
// A checkpoint a user takes of the replica, and the list Hyper-V Manager shows.
const USER_CHECKPOINT: PsScript = {
  name: 'test-user-checkpoint',
  body: 'Checkpoint-VM -Name $p.name -SnapshotName $p.label',
};
const CHECKPOINT_NAMES: PsScript = {
  name: 'test-checkpoint-names',
  body: "Get-VMSnapshot -VMName $p.name | Select-Object -Property 'Name'",
};

describe('the Hyper-V target side when a run is cut', { timeout: 180_000 }, () => {
  let sim: SimHost;
  let hv: HyperVDriver;
  let serial = 0;
  beforeAll(async () => {
    sim = await startSimHost();
    hv = sim.sharedDriver();
  }, 120_000);
  afterAll(async () => {
    await sim?.close();
  });

  /** A replica of a fresh source VM, at restore point `v1` holding pattern 1 at 0 and at 2 MiB. */
  const replicaAtV1 = async () => {
    const name = `cut-${++serial}`;
    await sim.makeVM(name, [SIZE, SIZE]);
    const source = await hv.getVM(name);
    const spec: ReplicaSpec = {
      name: `${name}-rep`,
      source,
      disks: source.disks.map((d) => ({ sourceDiskId: d.id, size: d.size })),
    };
    const replica = await hv.ensureReplica(spec);
    const model = replica.disks.map(() => new Uint8Array(SIZE));
    for (const [i, disk] of replica.disks.entries()) await write(replica, disk, model[i]!, 'run-1', 1);
    const v1 = await hv.createRestorePoint(replica, 'v1');
    await hv.markReplica(replica, 'ready');
    return { replica, v1, model };
  };

  const write = async (replica: Replica, disk: DiskRef, model: Uint8Array, runId: string, seed: number) => {
    const writer = await hv.openWriter(replica, disk, { runId });
    try {
      for (const offset of [0, 2 * MiB + 7]) {
        const data = testPattern(seed, 300_000);
        await writer.write(offset, data);
        model.set(data, offset);
      }
      await writer.flush();
    } finally {
      await writer.close();
    }
  };

  const expectDisks = async (replica: Replica, models: Uint8Array[]) => {
    for (const [i, disk] of replica.disks.entries()) {
      expect(compareBytes(await readWholeDisk(hv, disk), models[i]!), `disk ${i}`).toBe('equal');
    }
  };

  it('a writer killed after a flush leaves its writes invisible; a revert drops them', async () => {
    const { replica, v1, model } = await replicaAtV1();
    const at1 = model.map((m) => m.slice());
    // The run writes and flushes, then dies: its writer is never closed, nothing is committed.
    const writer = await hv.openWriter(replica, replica.disks[0]!, { runId: 'run-2' });
    await writer.write(MiB, testPattern(9, 100_000));
    await writer.flush();
    await expectDisks(replica, at1);
    expect(await hv.replicaMark(replica)).toBe('in-progress');
    await expect(hv.power(replica.id, 'start')).rejects.toMatchObject({ code: 'E_REPLICA_IN_PROGRESS' });
    await hv.revertTo(replica, v1);
    await expectDisks(replica, at1);
    expect(await hv.replicaMark(replica)).toBe('ready');
    await writer.close(); // what the dead process never did: it renames nothing back
    await expectDisks(replica, at1);
  });

  it('a commit cut between the disks and the checkpoint: a revert returns to the last point, a retry finishes it', async () => {
    const link = new PowerShellLink({ executable: sim.host.pwsh, timeoutMs: 60_000 });
    try {
      for (const ending of ['revert', 'retry'] as const) {
        const { replica, v1, model } = await replicaAtV1();
        const at1 = model.map((m) => m.slice());
        for (const [i, disk] of replica.disks.entries()) await write(replica, disk, model[i]!, 'run-2', 20 + i);
        const vmName = (await hv.getVM(replica.id)).name;
        await link.call(CHECKPOINT_TYPE, { name: vmName, type: 'Disabled' });
        // The pending files are renamed over the disks, then Checkpoint-VM fails: the cut.
        await expect(hv.createRestorePoint(replica, 'v2')).rejects.toMatchObject({ code: 'E_DRIVER' });
        await link.call(CHECKPOINT_TYPE, { name: vmName, type: 'Standard' });
        expect((await hv.listRestorePoints(replica)).map((p) => p.label)).toEqual(['v1']);
        expect(await hv.replicaMark(replica)).toBe('in-progress');
        if (ending === 'revert') {
          await hv.revertTo(replica, v1);
          await expectDisks(replica, at1);
        } else {
          await hv.createRestorePoint(replica, 'v2');
          await expectDisks(replica, model);
          expect((await hv.listRestorePoints(replica)).map((p) => p.label)).toEqual(['v1', 'v2']);
        }
      }
    } finally {
      await link.close();
    }
  });

  it("a user's own checkpoint of the replica is no restore point: not listed, never pruned, seen by the fingerprint", async () => {
    const link = new PowerShellLink({ executable: sim.host.pwsh, timeoutMs: 60_000 });
    try {
      const { replica, model } = await replicaAtV1();
      const vmName = (await hv.getVM(replica.id)).name;
      const before = (await hv.replicaState(replica)).value;
      await link.call(USER_CHECKPOINT, { name: vmName, label: 'before the upgrade' });
      expect((await hv.replicaState(replica)).value).not.toBe(before);
      expect((await hv.listRestorePoints(replica)).map((p) => p.label)).toEqual(['v1']);
      for (const [n, label] of ['v2', 'v3'].entries()) {
        await write(replica, replica.disks[0]!, model[0]!, `run-${n + 2}`, 30 + n);
        await hv.createRestorePoint(replica, label, { retention: 1 });
      }
      expect((await hv.listRestorePoints(replica)).map((p) => p.label)).toEqual(['v3']);
      const names = (await link.call<{ Name: string }>(CHECKPOINT_NAMES, { name: vmName })).map((c) => c.Name);
      expect(names).toEqual(['before the upgrade', 'v3']);
      await expectDisks(replica, model);
    } finally {
      await link.close();
    }
  });

  it("refuses to go on with a run's pending file that no longer opens, rather than forget its writes", async () => {
    const { replica } = await replicaAtV1();
    const disk = replica.disks[0]!;
    const writer = await hv.openWriter(replica, disk, { runId: 'run-torn' });
    await writer.write(0, testPattern(60, 4096));
    await writer.flush();
    // The process dies while the file is rewritten: its headers are gone.
    const dir = (await readdir(join(sim.host.root, 'replicas'), { withFileTypes: true }))
      .filter((e) => e.isDirectory())
      .map((e) => join(sim.host.root, 'replicas', e.name));
    const pending = (await Promise.all(dir.map(async (d) => (await readdir(d)).map((f) => join(d, f)))))
      .flat()
      .filter((f) => /replikit-pending-0-.*\.vhdx$/.test(f));
    expect(pending).toHaveLength(1);
    await writeFile(pending[0]!, new Uint8Array(MiB), { flag: 'r+' });
    // The resumed run is another process: another driver.
    const resumed = sim.sharedDriver();
    await expect(resumed.openWriter(replica, disk, { runId: 'run-torn' })).rejects.toMatchObject({ code: 'E_STATE' });
    await resumed.close();
  });
});
