import { join } from 'node:path';
import { compareBytes, readWholeDisk, testPattern } from '@replikit/core/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HyperVDriver, type PsScript } from '../src/index.js';
import { type SimHost, startSimHost } from './helpers/sim-host.js';

const MiB = 2 ** 20;

// What an administrator runs to move the host's default virtual hard disk folder.
const SET_DEFAULT_FOLDER: PsScript = {
  name: 'test-set-vmhost',
  body: 'Set-VMHost -VirtualHardDiskPath $p.path',
};
const DRIVE_PATHS: PsScript = {
  name: 'test-drive-paths',
  body: "Get-VMHardDiskDrive -VMName $p.name | Select-Object -Property 'Path'",
};

describe('a Hyper-V target without replicaPath', { timeout: 180_000 }, () => {
  let sim: SimHost;
  beforeAll(async () => {
    sim = await startSimHost();
  }, 120_000);
  afterAll(async () => {
    await sim?.close();
  });

  it("puts the replica's VHDX files in the host's default virtual hard disk folder (Get-VMHost)", async () => {
    const folder = join(sim.host.root, 'Hyper-V', 'Virtual Hard Disks');
    await sim.link.call(SET_DEFAULT_FOLDER, { path: folder });
    await sim.makeVM('no-path', [2 * MiB]);
    await sim.host.guestWrite('no-path', 0, 4096, testPattern(7, 65_536));
    // No replicaPath: the target asks the host where its disks go by default.
    const hv = new HyperVDriver({ link: sim.link, sharedLink: true, rct: true, target: { onWarning: () => {} } });
    const source = await hv.getVM('no-path');
    const snapshot = await hv.snapshot(source.id, 'run-1');
    const replica = await hv.ensureReplica({
      name: 'no-path-rep',
      source,
      disks: snapshot.disks.map((d) => ({ sourceDiskId: d.id, size: d.size })),
    });
    const writer = await hv.openWriter(replica, replica.disks[0]!, { runId: 'run-1' });
    await writer.write(0, await readWholeDisk(hv, snapshot.disks[0]!));
    await writer.flush();
    await writer.close();
    await hv.createRestorePoint(replica, 'run-1');

    const [drive] = await sim.link.call<{ Path: string }>(DRIVE_PATHS, { name: replica.meta!.vm });
    expect(drive!.Path.startsWith(`${folder}/`), drive!.Path).toBe(true);
    expect(compareBytes(await readWholeDisk(hv, replica.disks[0]!), await readWholeDisk(hv, snapshot.disks[0]!))).toBe(
      'equal',
    );
    await hv.deleteSnapshot(snapshot);
    await hv.close();
  });
});
